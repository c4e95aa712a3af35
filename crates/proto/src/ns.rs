//! Namespace URIs (see shared reference protocols-ms.md §0).
pub const SOAP12: &str = "http://www.w3.org/2003/05/soap-envelope";
pub const WSA: &str = "http://www.w3.org/2005/08/addressing";
pub const XSI: &str = "http://www.w3.org/2001/XMLSchema-instance";
pub const WSSE: &str = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd";
pub const WSU: &str = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd";
pub const XCEP: &str = "http://schemas.microsoft.com/windows/pki/2009/01/enrollmentpolicy";
pub const WST: &str = "http://docs.oasis-open.org/ws-sx/ws-trust/200512";
pub const WSTEP: &str = "http://schemas.microsoft.com/windows/pki/2009/01/enrollment";
pub const AUTH: &str = "http://schemas.xmlsoap.org/ws/2006/12/authorization";

pub const ACTION_GET_POLICIES: &str =
    "http://schemas.microsoft.com/windows/pki/2009/01/enrollmentpolicy/IPolicy/GetPolicies";
pub const ACTION_GET_POLICIES_RESPONSE: &str =
    "http://schemas.microsoft.com/windows/pki/2009/01/enrollmentpolicy/IPolicy/GetPoliciesResponse";
pub const ACTION_WSTEP: &str = "http://schemas.microsoft.com/windows/pki/2009/01/enrollment/RST/wstep";
pub const ACTION_WSTEP_RESPONSE: &str = "http://schemas.microsoft.com/windows/pki/2009/01/enrollment/RSTRC/wstep";
pub const ACTION_WSTEP_FAULT: &str =
    "http://schemas.microsoft.com/windows/pki/2009/01/enrollment/RequestSecurityTokenCertificateEnrollmentWSDetailFault";
pub const ACTION_KET: &str = "http://docs.oasis-open.org/ws-sx/ws-trust/200512/RST/KET";

pub const REQUEST_TYPE_ISSUE: &str = "http://docs.oasis-open.org/ws-sx/ws-trust/200512/Issue";
pub const REQUEST_TYPE_RENEW: &str = "http://docs.oasis-open.org/ws-sx/ws-trust/200512/Renew";
pub const REQUEST_TYPE_QUERY: &str = "http://schemas.microsoft.com/windows/pki/2009/01/enrollment/QueryTokenStatus";
pub const REQUEST_TYPE_KET: &str = "http://docs.oasis-open.org/ws-sx/ws-trust/200512/KET";

pub const TOKEN_TYPE_X509V3: &str =
    "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-x509-token-profile-1.0#X509v3";
pub const VALUE_TYPE_PKCS10: &str = "http://schemas.microsoft.com/windows/pki/2009/01/enrollment#PKCS10";
pub const VALUE_TYPE_PKCS7: &str =
    "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd#PKCS7";
pub const ENCODING_BASE64: &str =
    "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd#base64binary";
pub const PASSWORD_TEXT: &str =
    "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-username-token-profile-1.0#PasswordText";
/// The MS-MDE2 "Federated" bearer token; we use it for one-time bootstrap tokens as well.
pub const VALUE_TYPE_BOOTSTRAP_TOKEN: &str =
    "http://schemas.microsoft.com/5.0.0.0/ConfigurationManager/Enrollment/DeviceEnrollmentUserToken";
/// Our fault subcodes (`ae:BadBase64`, ...): specific, stable reasons.
pub const AUTOENROLL_FAULT: &str = "urn:autoenroll:fault";

/// MS-MDE2 discovery (request samples sometimes add a trailing `/`: accept both).
pub const DISCOVERY: &str = "http://schemas.microsoft.com/windows/management/2012/01/enrollment";
pub const ACTION_DISCOVER: &str =
    "http://schemas.microsoft.com/windows/management/2012/01/enrollment/IDiscoveryService/Discover";
pub const ACTION_DISCOVER_RESPONSE: &str =
    "http://schemas.microsoft.com/windows/management/2012/01/enrollment/IDiscoveryService/DiscoverResponse";
pub const TOKEN_TYPE_DEVICE_ENROLLMENT: &str =
    "http://schemas.microsoft.com/5.0.0.0/ConfigurationManager/Enrollment/DeviceEnrollmentToken";
pub const VALUE_TYPE_PROVISION_DOC: &str =
    "http://schemas.microsoft.com/5.0.0.0/ConfigurationManager/Enrollment/DeviceEnrollmentProvisionDoc";
pub const VALUE_TYPE_PKCS7_MDE: &str = "http://schemas.microsoft.com/windows/pki/2009/01/enrollment#PKCS7";
