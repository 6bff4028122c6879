//! Who a request is from, as the rate limits and the hold cap count it.

use std::net::{IpAddr, SocketAddr};

use axum::extract::ConnectInfo;
use axum::http::{Extensions, HeaderMap};

/// A client's address: an IPv4 address, or an IPv6 client's /56 (the block one subscriber
/// gets), as text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientAddr(String);

impl ClientAddr {
    /// The text the limits key on.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The client's address: the TCP peer, or with `hops` trusted proxies in front, the entry they
    /// appended to `X-Forwarded-For` (entries before it are the client's own say and are ignored).
    /// IPv6 clients count per /56, the block one subscriber gets (RIPE-690: a /56 or a /48 per
    /// site, so a /64 per client would give one subscriber 256 budgets). `None` when neither is known
    /// (a request made in process, as in tests).
    pub fn of(headers: &HeaderMap, extensions: &Extensions, hops: usize) -> Option<Self> {
        // Read as bytes: the entries a client wrote itself may hold anything (a non-ASCII byte
        // would fail the whole header as text); only the one our proxies appended must parse.
        let forwarded = (hops > 0)
            .then(|| headers.get("x-forwarded-for"))
            .flatten()
            .and_then(|xff| {
                let parts: Vec<&[u8]> = xff.as_bytes().split(|b| *b == b',').collect();
                let entry = parts.get(parts.len().checked_sub(hops)?)?;
                std::str::from_utf8(entry)
                    .ok()?
                    .trim()
                    .parse::<IpAddr>()
                    .ok()
            });
        let ip = forwarded.or_else(|| {
            extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0.ip())
        })?;
        Some(Self(match ip {
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => v4.to_string(),
                None => {
                    let s = v6.segments();
                    format!("{:x}:{:x}:{:x}:{:x}::/56", s[0], s[1], s[2], s[3] & 0xff00)
                }
            },
            ip => ip.to_string(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::extract::Request;

    /// The client's address as buy reads it from a request with this peer and header.
    fn seen(peer: &str, xff: Option<&str>, hops: usize) -> Option<String> {
        let mut r = Request::new(axum::body::Body::empty());
        r.extensions_mut()
            .insert(ConnectInfo(peer.parse::<SocketAddr>().unwrap()));
        if let Some(x) = xff {
            r.headers_mut()
                .insert("x-forwarded-for", x.parse().unwrap());
        }
        ClientAddr::of(r.headers(), r.extensions(), hops).map(|c| c.0)
    }

    /// How a deployment shape hands a request to buy: the TCP peer buy sees, the
    /// `X-Forwarded-For` it receives for a client at `client` that sent `supplied`, and the
    /// `TRUSTED_PROXY_HOPS` it runs with.
    struct Shape {
        name: &'static str,
        hops: usize,
        peer: &'static str,
        forward: fn(supplied: Option<&str>, client: &str) -> String,
    }

    /// What a proxy appending the client (and more) does to a header the client sent.
    fn after(supplied: Option<&str>, appended: &str) -> String {
        supplied.map_or_else(|| appended.to_owned(), |s| format!("{s}, {appended}"))
    }

    const SHAPES: [Shape; 4] = [
        // Google's external Application Load Balancer with a serverless NEG (terraform/, 2
        // hops): "<supplied>,<client-ip>,<load-balancer-ip>" reaches Cloud Run.
        Shape {
            name: "load balancer + serverless NEG",
            hops: 2,
            peer: "169.254.1.1:40000",
            forward: |s, c| after(s, &format!("{c}, 34.120.0.1")),
        },
        // The run.app URL directly (closed by the ingress setting in production; diagnostics):
        // Cloud Run's front end appends the client.
        Shape {
            name: "run.app",
            hops: 1,
            peer: "169.254.1.1:40000",
            forward: |s, c| after(s, c),
        },
        // scripts/dev: nginx with `$proxy_add_x_forwarded_for` appends `$remote_addr`.
        Shape {
            name: "local nginx",
            hops: 1,
            peer: "127.0.0.1:51000",
            forward: |s, c| after(s, c),
        },
        // No proxy: k6 and the tests on loopback. The client's own header is not looked at.
        Shape {
            name: "no proxy",
            hops: 0,
            peer: "203.0.113.7:5000",
            forward: |s, _| s.unwrap_or("").to_owned(),
        },
    ];

    /// Per deployment shape: the entry the trusted proxies appended is the client's, and no
    /// header a client sends picks another bucket or puts different clients in one.
    #[test]
    fn each_deployment_shape_finds_the_client_whatever_it_sends() {
        let spoofs = [
            None,
            Some("1.2.3.4"),
            Some("1.2.3.4, 5.6.7.8"),
            Some("garbage"),
            Some(" , ,"),
            Some("10.0.0.1, 10.0.0.1, 10.0.0.1, 10.0.0.1, 10.0.0.1"),
        ];
        for shape in &SHAPES {
            // Without a proxy the client is the peer itself.
            let (a, b) = if shape.hops == 0 {
                ("203.0.113.7", "203.0.113.7")
            } else {
                ("198.51.100.9", "198.51.100.10")
            };
            for supplied in spoofs {
                for client in [a, b] {
                    let peer = if shape.hops == 0 {
                        format!("{client}:5000")
                    } else {
                        shape.peer.to_owned()
                    };
                    let xff = (shape.forward)(supplied, client);
                    let xff = (!xff.is_empty()).then_some(xff.as_str());
                    assert_eq!(
                        seen(&peer, xff, shape.hops).as_deref(),
                        Some(client),
                        "{}: client {client} sent {supplied:?}",
                        shape.name
                    );
                }
            }
        }
        // Why the setting must match the shape: behind the load balancer with no trusted hop,
        // every client is the front end's address (one bucket for everyone), and with one hop
        // too few it is the load balancer's.
        let lb = &SHAPES[0];
        let xff = (lb.forward)(None, "198.51.100.9");
        assert_eq!(seen(lb.peer, Some(&xff), 0).as_deref(), Some("169.254.1.1"));
        assert_eq!(seen(lb.peer, Some(&xff), 1).as_deref(), Some("34.120.0.1"));
    }

    /// A byte a client wrote that is no ASCII (HTTP allows it as obs-text) does not make the
    /// whole header unreadable: the entry the load balancer appended still names the client.
    #[test]
    fn a_non_ascii_byte_the_client_sent_does_not_hide_the_client() {
        let mut r = Request::new(axum::body::Body::empty());
        r.extensions_mut().insert(ConnectInfo(
            "169.254.1.1:443".parse::<SocketAddr>().unwrap(),
        ));
        r.headers_mut().insert(
            "x-forwarded-for",
            axum::http::HeaderValue::from_bytes(b"\xff\xfe, 198.51.100.9, 34.120.0.1").unwrap(),
        );
        let found = ClientAddr::of(r.headers(), r.extensions(), 2).map(|c| c.0);
        assert_eq!(found.as_deref(), Some("198.51.100.9"));
    }

    #[test]
    fn the_client_counts_per_ipv6_subscriber_and_as_ipv4_when_mapped() {
        assert_eq!(
            seen("[2001:db8:1:2:aaaa::1]:443", None, 0).as_deref(),
            Some("2001:db8:1:0::/56")
        );
        // Another of the subscriber's /64s is the same client; the next /56 is another.
        assert_eq!(
            seen("[2001:db8:1:ff::2]:443", None, 0).as_deref(),
            Some("2001:db8:1:0::/56")
        );
        assert_eq!(
            seen("[2001:db8:1:1ff::2]:443", None, 0).as_deref(),
            Some("2001:db8:1:100::/56")
        );
        assert_eq!(
            seen("[::ffff:192.0.2.1]:443", None, 0).as_deref(),
            Some("192.0.2.1")
        );
        // Nothing known (a request made in process): no client.
        let r = Request::new(axum::body::Body::empty());
        assert_eq!(ClientAddr::of(r.headers(), r.extensions(), 2), None);
    }
}
