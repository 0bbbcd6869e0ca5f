//! TLS on the Pingora front door: a certificate per SNI name, HTTP/2 and
//! HTTP/1.1 by ALPN, the same cache as cleartext.

use crate::harness::{content, start_edge, start_origin, TestCert};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_sni_name_gets_its_certificate_and_alpn_picks_h2_or_h1() {
    let origin = start_origin().await;
    let a = TestCert::for_names(&["a.cdn.test"]);
    let b = TestCert::for_names(&["b.cdn.test", "*.b.cdn.test"]);
    let certs = vec![a.config.clone(), b.config.clone()];
    let edge = start_edge(&[origin.url()], "tls-edge", |c| {
        c.server.certificates = certs
    })
    .await;
    let tls = edge.tls.expect("tls listener");
    for (cert, host) in [(&a, "a.cdn.test"), (&b, "b.cdn.test"), (&b, "x.b.cdn.test")] {
        for http2 in [false, true] {
            // Trusts only this name's certificate: the handshake fails if SNI picked the other.
            let root = reqwest::Certificate::from_der(&cert.der).expect("root");
            let builder = reqwest::Client::builder()
                .no_proxy()
                .use_rustls_tls()
                .tls_built_in_root_certs(false)
                .add_root_certificate(root)
                .resolve(host, tls);
            let client = if http2 {
                builder.http2_prior_knowledge()
            } else {
                builder.http1_only()
            }
            .build()
            .expect("client");
            let url = format!("https://{host}:{}/obj/tls.m4s?size=5000", tls.port());
            let response = client
                .get(&url)
                .send()
                .await
                .unwrap_or_else(|e| panic!("{host} h2={http2}: {e:?}"));
            assert_eq!(response.status(), 200);
            let expected = if http2 {
                reqwest::Version::HTTP_2
            } else {
                reqwest::Version::HTTP_11
            };
            assert_eq!(response.version(), expected);
            assert_eq!(
                response.bytes().await.expect("body"),
                content("tls.m4s", 5000)
            );
        }
    }
    assert_eq!(
        origin.state.hits("/obj/tls.m4s"),
        1,
        "one cache behind every name and protocol"
    );
}
