//! CMS EnvelopedData for SCEP's pkcsPKIEnvelope: RSA key transport (PKCS#1 v1.5 or OAEP-SHA1)
//! with AES-CBC content encryption; 3DES and single DES only when the caller enables legacy
//! ciphers. Every failure after parsing reports the same error, so the caller cannot become a
//! padding oracle.
use crate::KeyError;
use aws_lc_rs::cipher::{
    DecryptionContext, PaddedBlockDecryptingKey, PaddedBlockEncryptingKey, UnboundCipherKey, AES_128, AES_256,
};
#[allow(deprecated)]
use aws_lc_rs::cipher::{DES_EDE3_FOR_LEGACY_USE_ONLY, DES_FOR_LEGACY_USE_ONLY};
use aws_lc_rs::iv::FixedLength;
use aws_lc_rs::rsa::{
    OaepPrivateDecryptingKey, Pkcs1PrivateDecryptingKey, Pkcs1PublicEncryptingKey, PrivateDecryptingKey,
    PublicEncryptingKey, OAEP_SHA1_MGF1SHA1,
};
use cms::content_info::ContentInfo;
use const_oid::ObjectIdentifier as Oid;
use der::asn1::OctetString;
use der::{Decode, Encode, EncodingRules, Reader, SliceReader, Tag};

const ENVELOPED_DATA: Oid = Oid::new_unwrap("1.2.840.113549.1.7.3");
const DATA: Oid = Oid::new_unwrap("1.2.840.113549.1.7.1");
const RSA_ENCRYPTION: Oid = Oid::new_unwrap("1.2.840.113549.1.1.1");
const RSAES_OAEP: Oid = Oid::new_unwrap("1.2.840.113549.1.1.7");
const AES_128_CBC: Oid = Oid::new_unwrap("2.16.840.1.101.3.4.1.2");
const AES_256_CBC: Oid = Oid::new_unwrap("2.16.840.1.101.3.4.1.42");
const DES_EDE3_CBC: Oid = Oid::new_unwrap("1.2.840.113549.3.7");
const DES_CBC: Oid = Oid::new_unwrap("1.3.14.3.2.7");

/// The content-encryption algorithm of an envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContentCipher {
    Aes128Cbc,
    Aes256Cbc,
    /// Legacy only.
    Des3Cbc,
    /// Legacy only (micromdm's scepclient sends nothing else); never used for replies.
    DesCbc,
}

impl ContentCipher {
    fn from_oid(oid: &Oid) -> Option<ContentCipher> {
        Some(match *oid {
            AES_128_CBC => ContentCipher::Aes128Cbc,
            AES_256_CBC => ContentCipher::Aes256Cbc,
            DES_EDE3_CBC => ContentCipher::Des3Cbc,
            DES_CBC => ContentCipher::DesCbc,
            _ => return None,
        })
    }

    fn oid(self) -> Oid {
        match self {
            ContentCipher::Aes128Cbc => AES_128_CBC,
            ContentCipher::Aes256Cbc => AES_256_CBC,
            ContentCipher::Des3Cbc => DES_EDE3_CBC,
            ContentCipher::DesCbc => DES_CBC,
        }
    }

    pub fn is_legacy(self) -> bool {
        matches!(self, ContentCipher::Des3Cbc | ContentCipher::DesCbc)
    }

    #[allow(deprecated)]
    fn algorithm(self) -> &'static aws_lc_rs::cipher::Algorithm {
        match self {
            ContentCipher::Aes128Cbc => &AES_128,
            ContentCipher::Aes256Cbc => &AES_256,
            ContentCipher::Des3Cbc => &DES_EDE3_FOR_LEGACY_USE_ONLY,
            ContentCipher::DesCbc => &DES_FOR_LEGACY_USE_ONLY,
        }
    }

    fn key_len(self) -> usize {
        match self {
            ContentCipher::Aes128Cbc => 16,
            ContentCipher::Aes256Cbc => 32,
            ContentCipher::Des3Cbc => 24,
            ContentCipher::DesCbc => 8,
        }
    }

    fn iv_len(self) -> usize {
        if self.is_legacy() {
            8
        } else {
            16
        }
    }
}

fn bad() -> KeyError {
    KeyError::InvalidKey("the envelope does not decrypt with the recipient key".into())
}

fn ber(bytes: &[u8]) -> Result<SliceReader<'_>, KeyError> {
    Ok(SliceReader::new_with_encoding_rules(bytes, EncodingRules::Ber)?)
}

/// The octets of an OCTET STRING-like element (here `[0] IMPLICIT encryptedContent`), primitive
/// or constructed from segments (micromdm writes the constructed BER form).
fn octets(r: &mut SliceReader<'_>) -> Result<Vec<u8>, KeyError> {
    let constructed = r.peek_byte().is_some_and(|b| b & 0x20 != 0);
    let any: der::Any = r.decode()?;
    if !constructed {
        return Ok(any.value().to_vec());
    }
    let mut out = Vec::new();
    let mut inner = ber(any.value())?;
    while !inner.is_finished() {
        out.extend(octets(&mut inner)?);
    }
    Ok(out)
}

fn iv_context(iv: &[u8]) -> Result<DecryptionContext, KeyError> {
    let bad_iv = || KeyError::Encoding("the IV does not fit the cipher".into());
    Ok(match iv.len() {
        16 => DecryptionContext::Iv128(FixedLength::from(<[u8; 16]>::try_from(iv).map_err(|_| bad_iv())?)),
        8 => DecryptionContext::Iv64(FixedLength::from(<[u8; 8]>::try_from(iv).map_err(|_| bad_iv())?)),
        _ => return Err(bad_iv()),
    })
}

/// Decrypts a pkcsPKIEnvelope (a ContentInfo of type envelopedData, or a bare EnvelopedData);
/// returns the content and the cipher the sender chose. DES and 3DES need `legacy`.
pub fn decrypt_enveloped(
    der_bytes: &[u8],
    recipient_pkcs8: &[u8],
    legacy: bool,
) -> Result<(Vec<u8>, ContentCipher), KeyError> {
    decrypt_enveloped_with(der_bytes, &recipient_key(recipient_pkcs8)?, legacy)
}

/// The recipient's RSA key, parsed once (a server decrypts with the same key for every request;
/// parsing PKCS#8 costs about a third of a millisecond).
pub fn recipient_key(pkcs8: &[u8]) -> Result<PrivateDecryptingKey, KeyError> {
    PrivateDecryptingKey::from_pkcs8(pkcs8).map_err(|e| KeyError::InvalidKey(e.to_string()))
}

/// `decrypt_enveloped` with a key from `recipient_key`.
pub fn decrypt_enveloped_with(
    der_bytes: &[u8],
    key: &PrivateDecryptingKey,
    legacy: bool,
) -> Result<(Vec<u8>, ContentCipher), KeyError> {
    // Read by hand in BER: clients write indefinite lengths and constructed strings.
    let body = match ContentInfo::from_ber(der_bytes) {
        Ok(ci) if ci.content_type == ENVELOPED_DATA => ci.content.value().to_vec(),
        Ok(_) => return Err(KeyError::Encoding("not an EnvelopedData".into())),
        Err(_) => der::Any::from_ber(der_bytes)?.value().to_vec(),
    };
    let mut r = ber(&body)?;
    let _version: der::Any = r.decode()?;
    if r.peek_byte() == Some(0xa0) {
        let _originator: der::Any = r.decode()?;
    }
    let recipients: der::Any = r.decode()?;
    let mut rr = ber(recipients.value())?;
    let mut infos = Vec::new();
    while !rr.is_finished() {
        // Key transport recipients are plain SEQUENCEs; the other kinds are tagged [1]..[4].
        if rr.peek_byte() == Some(0x30) {
            infos.push(rr.decode::<KeyTransRecipientAny>()?);
        } else {
            let _other: der::Any = rr.decode()?;
        }
    }
    let eci: der::Any = r.decode()?;
    let mut er = ber(eci.value())?;
    let _content_type: Oid = er.decode()?;
    let enc_alg: spki::AlgorithmIdentifierOwned = er.decode()?;
    let mut ciphertext = octets(&mut er)?;
    let cipher = ContentCipher::from_oid(&enc_alg.oid)
        .ok_or_else(|| KeyError::Unsupported(format!("content encryption {}", enc_alg.oid)))?;
    if cipher.is_legacy() && !legacy {
        let name = if cipher == ContentCipher::DesCbc { "single DES" } else { "3DES" };
        return Err(KeyError::Unsupported(format!(
            "{name} content encryption is refused (legacy ciphers are disabled on this server; use AES)"
        )));
    }
    let iv =
        enc_alg.parameters.as_ref().ok_or_else(|| KeyError::Encoding("no IV".into()))?.decode_as::<OctetString>()?;
    if iv.as_bytes().len() != cipher.iv_len() {
        return Err(KeyError::Encoding("the IV does not fit the cipher".into()));
    }
    // Try every key-transport recipient: the one for our key decrypts.
    for k in &infos {
        let mut cek = vec![0u8; key.key_size_bytes()];
        let cek = match k.key_enc_alg.oid {
            RSA_ENCRYPTION => Pkcs1PrivateDecryptingKey::new(key.clone())
                .map_err(|_| bad())?
                .decrypt(k.enc_key.as_bytes(), &mut cek)
                .ok(),
            RSAES_OAEP => OaepPrivateDecryptingKey::new(key.clone())
                .map_err(|_| bad())?
                .decrypt(&OAEP_SHA1_MGF1SHA1, k.enc_key.as_bytes(), &mut cek, None)
                .ok(),
            _ => None,
        };
        let Some(cek) = cek else { continue };
        let unbound = UnboundCipherKey::new(cipher.algorithm(), cek).map_err(|_| bad())?;
        let dk = PaddedBlockDecryptingKey::cbc_pkcs7(unbound).map_err(|_| bad())?;
        let plain = dk.decrypt(&mut ciphertext, iv_context(iv.as_bytes())?).map_err(|_| bad())?;
        return Ok((plain.to_vec(), cipher));
    }
    Err(bad())
}

type RawCertificate = x509_cert::certificate::CertificateInner<x509_cert::certificate::Raw>;

#[derive(der::Sequence)]
struct IssuerAndSerialRaw {
    issuer: x509_cert::name::Name,
    serial_number: x509_cert::serial_number::SerialNumber<x509_cert::certificate::Raw>,
}

#[derive(der::Sequence)]
struct KeyTransRecipient {
    version: u8,
    rid: IssuerAndSerialRaw,
    key_enc_alg: spki::AlgorithmIdentifierOwned,
    enc_key: OctetString,
}

/// A recipient as read: the identifier is not checked (the key that decrypts is ours), so
/// odd serial numbers in it do not matter.
#[derive(der::Sequence)]
struct KeyTransRecipientAny {
    version: der::Any,
    rid: der::Any,
    key_enc_alg: spki::AlgorithmIdentifierOwned,
    enc_key: OctetString,
}

#[derive(der::Sequence)]
struct EncryptedContentInfo {
    content_type: Oid,
    alg: spki::AlgorithmIdentifierOwned,
    #[asn1(context_specific = "0", tag_mode = "IMPLICIT")]
    content: OctetString,
}

#[derive(der::Sequence)]
struct EnvelopedData {
    version: u8,
    recipients: der::Any,
    content: EncryptedContentInfo,
}

/// Encrypts `plaintext` to the RSA key of `recipient_cert_der` (PKCS#1 v1.5 key transport,
/// the one every SCEP client decrypts) and returns a ContentInfo(envelopedData). The
/// recipient is named by issuer and serial as written in its certificate, however long.
pub fn encrypt_enveloped(
    plaintext: &[u8],
    recipient_cert_der: &[u8],
    cipher: ContentCipher,
) -> Result<Vec<u8>, KeyError> {
    let cert = RawCertificate::from_der(recipient_cert_der)?;
    let tbs = cert.tbs_certificate();
    let spki_der = tbs.subject_public_key_info().to_der()?;
    let public = PublicEncryptingKey::from_der(&spki_der)
        .map_err(|_| KeyError::Unsupported("the recipient certificate has no RSA key to encrypt to".into()))?;
    let mut cek = crate::random_bytes(cipher.key_len())?;
    if cipher == ContentCipher::Des3Cbc {
        // Three distinct DES keys (aws-lc refuses degenerate ones; astronomically unlikely anyway).
        while cek[0..8] == cek[8..16] || cek[8..16] == cek[16..24] || cek[0..8] == cek[16..24] {
            cek = crate::random_bytes(24)?;
        }
    }
    let enc = PaddedBlockEncryptingKey::cbc_pkcs7(
        UnboundCipherKey::new(cipher.algorithm(), &cek).map_err(|_| KeyError::Encoding("content key".into()))?,
    )
    .map_err(|_| KeyError::Encoding("content key".into()))?;
    let mut content = plaintext.to_vec();
    let ctx = enc.encrypt(&mut content).map_err(|_| KeyError::Encoding("encryption failed".into()))?;
    let iv: &[u8] = (&ctx).try_into().map_err(|_| KeyError::Encoding("IV".into()))?;
    let kt = Pkcs1PublicEncryptingKey::new(public).map_err(|_| KeyError::Encoding("recipient key".into()))?;
    let mut wrapped = vec![0u8; kt.ciphertext_size()];
    let wrapped = kt.encrypt(&cek, &mut wrapped).map_err(|_| KeyError::Encoding("key transport failed".into()))?;
    let ktri = KeyTransRecipient {
        version: 0,
        rid: IssuerAndSerialRaw { issuer: tbs.issuer().clone(), serial_number: tbs.serial_number().clone() },
        key_enc_alg: spki::AlgorithmIdentifierOwned { oid: RSA_ENCRYPTION, parameters: Some(der::Any::null()) },
        enc_key: OctetString::new(wrapped.to_vec())?,
    };
    let ed = EnvelopedData {
        version: 0,
        recipients: der::Any::new(Tag::Set, ktri.to_der()?)?,
        content: EncryptedContentInfo {
            content_type: DATA,
            alg: spki::AlgorithmIdentifierOwned {
                oid: cipher.oid(),
                parameters: Some(der::Any::encode_from(&OctetString::new(iv)?)?),
            },
            content: OctetString::new(content)?,
        },
    };
    Ok(ContentInfo { content_type: ENVELOPED_DATA, content: der::Any::encode_from(&ed)? }.to_der()?)
}
