//! CMS EnvelopedData decryption for SCEP's pkcsPKIEnvelope: RSA key transport (PKCS#1 v1.5 or
//! OAEP-SHA1) and AES-CBC content encryption. Every failure after parsing reports the same
//! error, so the caller cannot become a padding oracle.
use crate::KeyError;
use aws_lc_rs::cipher::{DecryptionContext, PaddedBlockDecryptingKey, UnboundCipherKey, AES_128, AES_256};
use aws_lc_rs::iv::FixedLength;
use aws_lc_rs::rsa::{OaepPrivateDecryptingKey, Pkcs1PrivateDecryptingKey, PrivateDecryptingKey, OAEP_SHA1_MGF1SHA1};
use cms::content_info::ContentInfo;
use cms::enveloped_data::RecipientInfo;
use der::asn1::OctetString;
use der::{Decode, EncodingRules, Reader, SliceReader};

const ENVELOPED_DATA: &str = "1.2.840.113549.1.7.3";
const RSA_ENCRYPTION: &str = "1.2.840.113549.1.1.1";
const RSAES_OAEP: &str = "1.2.840.113549.1.1.7";
const AES_128_CBC: &str = "2.16.840.1.101.3.4.1.2";
const AES_256_CBC: &str = "2.16.840.1.101.3.4.1.42";
const DES_EDE3_CBC: &str = "1.2.840.113549.3.7";
const DES_CBC: &str = "1.3.14.3.2.7";

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

/// Decrypts a pkcsPKIEnvelope (a ContentInfo of type envelopedData, or a bare EnvelopedData).
pub fn decrypt_enveloped(der_bytes: &[u8], recipient_pkcs8: &[u8]) -> Result<Vec<u8>, KeyError> {
    // Read by hand in BER: clients write indefinite lengths and constructed strings.
    let body = match ContentInfo::from_ber(der_bytes) {
        Ok(ci) if ci.content_type.to_string() == ENVELOPED_DATA => ci.content.value().to_vec(),
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
        infos.push(rr.decode::<RecipientInfo>()?);
    }
    let eci: der::Any = r.decode()?;
    let mut er = ber(eci.value())?;
    let _content_type: der::asn1::ObjectIdentifier = er.decode()?;
    let enc_alg: spki::AlgorithmIdentifierOwned = er.decode()?;
    let mut ciphertext = octets(&mut er)?;
    let alg = enc_alg.oid.to_string();
    let cipher = match alg.as_str() {
        AES_128_CBC => &AES_128,
        AES_256_CBC => &AES_256,
        DES_EDE3_CBC => {
            return Err(KeyError::Unsupported("3DES content encryption (legacy clients) is not enabled".into()))
        }
        DES_CBC => return Err(KeyError::Unsupported("single DES content encryption is refused".into())),
        other => return Err(KeyError::Unsupported(format!("content encryption {other}"))),
    };
    let iv =
        enc_alg.parameters.as_ref().ok_or_else(|| KeyError::Encoding("no IV".into()))?.decode_as::<OctetString>()?;
    let iv: [u8; 16] = iv.as_bytes().try_into().map_err(|_| KeyError::Encoding("IV is not 16 bytes".into()))?;
    let key = PrivateDecryptingKey::from_pkcs8(recipient_pkcs8).map_err(|e| KeyError::InvalidKey(e.to_string()))?;
    // Try every key-transport recipient: the one for our key decrypts.
    for ri in &infos {
        let RecipientInfo::Ktri(k) = ri else { continue };
        let mut cek = vec![0u8; key.key_size_bytes()];
        let cek = match k.key_enc_alg.oid.to_string().as_str() {
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
        let unbound = UnboundCipherKey::new(cipher, cek).map_err(|_| bad())?;
        let dk = PaddedBlockDecryptingKey::cbc_pkcs7(unbound).map_err(|_| bad())?;
        let plain = dk.decrypt(&mut ciphertext, DecryptionContext::Iv128(FixedLength::from(iv))).map_err(|_| bad())?;
        return Ok(plain.to_vec());
    }
    Err(bad())
}
