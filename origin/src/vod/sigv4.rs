//! AWS Signature Version 4 (the `Authorization: AWS4-HMAC-SHA256 …` header
//! S3-compatible stores check), for the range GETs of a `[[vod.remote]]`
//! store (`[vod.remote.s3]`, see [`super::remote`]). Pure: the caller gives
//! the time and the request's parts. Tested against AWS's published examples.

use hmac::{KeyInit, Mac};
use sha2::{Digest, Sha256};

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// SHA-256 of an empty body, the payload hash of a GET.
pub const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// Who signs, and for what.
pub struct Signer<'a> {
    pub access_key_id: &'a str,
    /// Never logged.
    pub secret: &'a str,
    pub region: &'a str,
    pub service: &'a str,
}

/// What a signature covers: `path` already URI-encoded (S3: each segment
/// once), `query` in canonical form (sorted, encoded; empty for none),
/// `headers` as sent (names any case; `host` and `x-amz-date` among them).
pub struct Request<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub query: &'a str,
    pub headers: &'a [(&'a str, &'a str)],
    pub payload_sha256: &'a str,
    /// `YYYYMMDDTHHMMSSZ`, the `x-amz-date` header's value.
    pub amz_date: &'a str,
}

fn mac(key: &[u8], data: &[u8]) -> [u8; 32] {
    // HMAC takes a key of any length.
    let mut m = <HmacSha256 as KeyInit>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    m.update(data);
    m.finalize().into_bytes().into()
}

/// The canonical request (§ "Create a canonical request") and the signed
/// header names (`;`-joined).
pub fn canonical_request(r: &Request) -> (String, String) {
    let mut headers: Vec<(String, String)> = r
        .headers
        .iter()
        .map(|(n, v)| {
            (
                n.to_ascii_lowercase(),
                v.split_whitespace().collect::<Vec<_>>().join(" "),
            )
        })
        .collect();
    headers.sort();
    let mut canonical_headers = String::new();
    for (n, v) in &headers {
        canonical_headers.push_str(&format!("{n}:{v}\n"));
    }
    let signed: Vec<&str> = headers.iter().map(|(n, _)| n.as_str()).collect();
    let signed = signed.join(";");
    (
        format!(
            "{}\n{}\n{}\n{}\n{}\n{}",
            r.method, r.path, r.query, canonical_headers, signed, r.payload_sha256
        ),
        signed,
    )
}

impl Signer<'_> {
    /// The `Authorization` header's value for `r`.
    pub fn authorization(&self, r: &Request) -> String {
        let (canonical, signed) = canonical_request(r);
        let date = r.amz_date.get(..8).unwrap_or(r.amz_date);
        let scope = format!("{date}/{}/{}/aws4_request", self.region, self.service);
        let to_sign = format!(
            "AWS4-HMAC-SHA256\n{}\n{scope}\n{}",
            r.amz_date,
            hex::encode(Sha256::digest(canonical.as_bytes()))
        );
        let k_date = mac(format!("AWS4{}", self.secret).as_bytes(), date.as_bytes());
        let k_region = mac(&k_date, self.region.as_bytes());
        let k_service = mac(&k_region, self.service.as_bytes());
        let k_signing = mac(&k_service, b"aws4_request");
        let signature = hex::encode(mac(&k_signing, to_sign.as_bytes()));
        format!(
            "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed}, Signature={signature}",
            self.access_key_id
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// AWS's SigV4 test suite, `get-vanilla`.
    #[test]
    fn get_vanilla_from_the_aws_test_suite() {
        let signer = Signer {
            access_key_id: "AKIDEXAMPLE",
            secret: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            region: "us-east-1",
            service: "service",
        };
        let r = Request {
            method: "GET",
            path: "/",
            query: "",
            headers: &[
                ("Host", "example.amazonaws.com"),
                ("X-Amz-Date", "20150830T123600Z"),
            ],
            payload_sha256: EMPTY_SHA256,
            amz_date: "20150830T123600Z",
        };
        let (canonical, _) = canonical_request(&r);
        assert_eq!(
            hex::encode(Sha256::digest(canonical.as_bytes())),
            "bb579772317eb040ac9ed261061d46c1f17a8133879d6129b6e1c25292927e63"
        );
        assert_eq!(
            signer.authorization(&r),
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
        );
    }

    /// The S3 documentation's "GET Object" example: a range GET.
    #[test]
    fn s3_range_get_from_the_aws_documentation() {
        let signer = Signer {
            access_key_id: "AKIAIOSFODNN7EXAMPLE",
            secret: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            region: "us-east-1",
            service: "s3",
        };
        let r = Request {
            method: "GET",
            path: "/test.txt",
            query: "",
            headers: &[
                ("Host", "examplebucket.s3.amazonaws.com"),
                ("Range", "bytes=0-9"),
                ("x-amz-content-sha256", EMPTY_SHA256),
                ("x-amz-date", "20130524T000000Z"),
            ],
            payload_sha256: EMPTY_SHA256,
            amz_date: "20130524T000000Z",
        };
        let (canonical, signed) = canonical_request(&r);
        assert_eq!(signed, "host;range;x-amz-content-sha256;x-amz-date");
        assert_eq!(
            hex::encode(Sha256::digest(canonical.as_bytes())),
            "7344ae5b7ee6c3e7e6b0fe0640412a37625d1fbfff95c48bbb2dc43964946972"
        );
        assert!(
            signer.authorization(&r).ends_with(
                "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
            ),
            "{}",
            signer.authorization(&r)
        );
    }
}
