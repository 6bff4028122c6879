//! The gate over TLS (`rediss://`), as with Memorystore's in-transit encryption: against a
//! Redis that scripts/test starts with TLS only, a CA of its own and a certificate shaped like
//! Memorystore's (the address in the common name only, no subject alternative name; ADR 48).

use gate::{Gate, ReadModel};
use std::time::Duration;

fn var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set: run scripts/test"))
}

#[tokio::test]
async fn connects_over_tls_to_a_memorystore_shaped_certificate_trusting_the_given_ca_only() {
    let url = var("TEST_REDIS_TLS_URL");
    let ca = std::fs::read_to_string(var("TEST_REDIS_CA")).unwrap();
    let gate = Gate::connect_with_ca(&url, Duration::from_secs(2), Some(&ca))
        .await
        .expect("TLS connect");
    gate.ping().await.unwrap();
    let ev = domain::Event::frequency(
        domain::EventId::parse("tls-check").unwrap(),
        3,
        chrono::Utc::now(),
        60,
    );
    gate.reset(&ev.id).await.unwrap();
    assert!(gate.seed(&ev).await.unwrap());
    assert_eq!(
        gate.refresh(&ev.id).await.unwrap().unwrap().stock["vip-3-day"].available,
        3
    );

    // The system trust store does not know this CA: the certificate must be refused.
    let refused = match Gate::connect_with_ca(&url, Duration::from_secs(2), None).await {
        Err(_) => true,
        Ok(g) => g.ping().await.is_err(),
    };
    assert!(refused, "an untrusted server certificate was accepted");
    // Nor does another CA's.
    let other = std::fs::read_to_string(var("TEST_REDIS_OTHER_CA")).unwrap();
    match Gate::connect_with_ca(&url, Duration::from_secs(2), Some(&other)).await {
        // Both test CAs have the same name: found by name, then refused by its signature.
        Err(gate::GateError::Tls(e)) => {
            assert!(matches!(e, rustls::Error::InvalidCertificate(_)), "{e}")
        }
        Err(e) => panic!("refused for another reason than the certificate: {e}"),
        Ok(_) => panic!("a server certificate from another CA was accepted"),
    }
    // And plain text to a TLS port gets nowhere.
    let plain = url.replacen("rediss://", "redis://", 1);
    let refused = match Gate::connect(&plain, Duration::from_secs(1)).await {
        Err(_) => true,
        Ok(g) => g.ping().await.is_err(),
    };
    assert!(refused);
}
