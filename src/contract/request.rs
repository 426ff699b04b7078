//! Inbound: the `authorize` message of a NOTIFY (contract §2) as an [`AuthzRequest`].
//!
//! Arguments are taken by name; unknown arguments are ignored; a NULL, a value of the wrong
//! type or a string that is not UTF-8 counts as absent. Strings are [`ByteString`]s sharing
//! the frame's buffer (no copy of the bearer token). A NOTIFY without an `authorize` message
//! becomes a request without arguments, which the decision answers with `400 bad_request`:
//! every NOTIFY still gets exactly one ACK.

use std::net::IpAddr;

use bytestring::ByteString;

use super::{arg, MESSAGE_NAME, SERVING_MESSAGE_NAME};
use crate::decision::AuthzRequest;
use crate::spop::{Message, TypedData};

fn string_arg(v: &TypedData) -> Option<ByteString> {
    match v {
        TypedData::String(b) => ByteString::try_from(b.clone()).ok(),
        _ => None,
    }
}

fn ip_arg(v: &TypedData) -> Option<IpAddr> {
    match *v {
        TypedData::Ipv4(a) => Some(IpAddr::V4(a)),
        TypedData::Ipv6(a) => Some(IpAddr::V6(a)),
        _ => None,
    }
}

/// Build the request from a NOTIFY's messages (the first `authorize` or `authorize-serving`
/// message; for an argument given twice, the first valid value).
pub fn request_from_messages(messages: &[Message]) -> AuthzRequest {
    let mut r = AuthzRequest::default();
    let Some(m) = messages
        .iter()
        .find(|m| m.name == MESSAGE_NAME.as_bytes() || m.name == SERVING_MESSAGE_NAME.as_bytes())
    else {
        return r;
    };
    for a in &m.args {
        let slot = match &a.name[..] {
            arg::BODY => {
                if r.body.is_none() {
                    r.body = match &a.value {
                        TypedData::Binary(b) | TypedData::String(b) => Some(b.clone()),
                        _ => None,
                    };
                }
                continue;
            }
            arg::BODY_SIZE => {
                if r.body_size.is_none() {
                    r.body_size = a.value.as_i64().and_then(|n| u64::try_from(n).ok());
                }
                continue;
            }
            arg::CONTENT_TYPE => &mut r.content_type,
            arg::METHOD => &mut r.method,
            arg::PATH => &mut r.path,
            arg::HOST => &mut r.host,
            arg::AUTHORIZATION => &mut r.authorization,
            arg::COOKIE => &mut r.cookie,
            arg::UNIQUE_ID => &mut r.unique_id,
            arg::SRC => {
                if r.src.is_none() {
                    r.src = ip_arg(&a.value);
                }
                continue;
            }
            _ => continue,
        };
        if slot.is_none() {
            *slot = string_arg(&a.value);
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use bytes::{Bytes, BytesMut};

    use super::*;
    use crate::spop::frame::{self, Arg};

    fn arg(name: &'static str, value: TypedData) -> Arg {
        Arg {
            name: Bytes::from_static(name.as_bytes()),
            value,
        }
    }

    fn msg(name: &'static str, args: Vec<Arg>) -> Message {
        Message {
            name: Bytes::from_static(name.as_bytes()),
            args,
        }
    }

    fn s(v: &'static str) -> TypedData {
        TypedData::static_str(v)
    }

    #[test]
    fn maps_every_contract_argument_by_name() {
        let m = msg(
            "authorize",
            vec![
                arg("unique_id", s("abc-1")),
                arg("src", TypedData::Ipv4(Ipv4Addr::new(10, 1, 2, 3))),
                arg("cookie", s("a=b")),
                arg("authorization", s("Bearer x.y.z")),
                arg("host", s("api.example.com")),
                arg("path", s("/v1/x")),
                arg("method", s("POST")),
                arg("extra", TypedData::Int64(5)),
            ],
        );
        let r = request_from_messages(&[m]);
        assert_eq!(r.method.as_deref(), Some("POST"));
        assert_eq!(r.path.as_deref(), Some("/v1/x"));
        assert_eq!(r.host.as_deref(), Some("api.example.com"));
        assert_eq!(r.authorization.as_deref(), Some("Bearer x.y.z"));
        assert_eq!(r.cookie.as_deref(), Some("a=b"));
        assert_eq!(r.unique_id.as_deref(), Some("abc-1"));
        assert_eq!(r.src, Some(IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3))));
        let r = request_from_messages(&[msg(
            "authorize",
            vec![arg("src", TypedData::Ipv6(Ipv6Addr::LOCALHOST))],
        )]);
        assert_eq!(r.src, Some(IpAddr::V6(Ipv6Addr::LOCALHOST)));
    }

    #[test]
    fn null_wrong_type_and_invalid_utf8_are_absent() {
        let m = msg(
            "authorize",
            vec![
                arg("method", TypedData::Null),
                arg("path", TypedData::Binary(Bytes::from_static(b"/x"))),
                arg("host", TypedData::Int64(1)),
                arg(
                    "authorization",
                    TypedData::String(Bytes::from_static(b"Bearer \xff\xfe")),
                ),
                arg("src", s("127.0.0.1")),
                arg("unique_id", TypedData::Bool(true)),
            ],
        );
        let r = request_from_messages(&[m]);
        assert!(r.method.is_none() && r.path.is_none() && r.host.is_none());
        assert!(r.authorization.is_none() && r.src.is_none() && r.unique_id.is_none());
    }

    #[test]
    fn first_authorize_message_and_first_valid_value_win() {
        let other = msg("check-request", vec![arg("method", s("DELETE"))]);
        let m = msg(
            "authorize",
            vec![
                arg("method", TypedData::Null),
                arg("method", s("GET")),
                arg("method", s("PUT")),
            ],
        );
        let second = msg("authorize", vec![arg("path", s("/second"))]);
        let r = request_from_messages(&[other.clone(), m, second]);
        assert_eq!(r.method.as_deref(), Some("GET"));
        assert!(r.path.is_none());
        let r = request_from_messages(&[other]);
        assert!(r.method.is_none(), "no authorize message: no arguments");
        assert!(request_from_messages(&[]).method.is_none());
    }

    /// `authorize-serving` is `authorize` plus the body: BINARY (as `req.body` is) or STRING,
    /// its announced size as any integer type, the content type.
    #[test]
    fn authorize_serving_carries_the_body() {
        let m = msg(
            "authorize-serving",
            vec![
                arg("method", s("POST")),
                arg("path", s("/serving-endpoints/x/invocations")),
                arg(
                    "body",
                    TypedData::Binary(Bytes::from_static(b"{\"inputs\": [1]}")),
                ),
                arg("body_size", TypedData::Uint32(15)),
                arg("content_type", s("application/json")),
            ],
        );
        let r = request_from_messages(&[m]);
        assert_eq!(r.method.as_deref(), Some("POST"));
        assert_eq!(r.body.as_deref(), Some(&b"{\"inputs\": [1]}"[..]));
        assert_eq!(r.body_size, Some(15));
        assert_eq!(r.content_type.as_deref(), Some("application/json"));
        let r = request_from_messages(&[msg(
            "authorize",
            vec![
                arg("body", s("x")),
                arg("body_size", TypedData::Int64(-1)),
                arg("content_type", TypedData::Null),
            ],
        )]);
        assert_eq!(r.body.as_deref(), Some(&b"x"[..]));
        assert_eq!(r.body_size, None, "a negative size is absent");
        assert!(r.content_type.is_none());
        let r = request_from_messages(&[msg("authorize", vec![arg("body", TypedData::Int32(1))])]);
        assert!(r.body.is_none());
    }

    /// The bearer token in the request is a slice of the NOTIFY frame, not a copy.
    #[test]
    fn strings_share_the_frame_buffer() {
        let token = "Bearer ".to_owned() + &"a".repeat(1000);
        let mut f = BytesMut::new();
        frame::encode_notify(
            &mut f,
            1,
            1,
            &[msg(
                "authorize",
                vec![arg(
                    "authorization",
                    TypedData::String(token.clone().into()),
                )],
            )],
        );
        let frame = f.freeze();
        let messages = frame::decode_messages(frame.slice(11..)).unwrap();
        let r = request_from_messages(&messages);
        let got = r.authorization.unwrap();
        assert_eq!(&*got, token);
        let start = frame.as_ptr() as usize;
        let p = got.as_ptr() as usize;
        assert!(
            p >= start && p < start + frame.len(),
            "token points into the frame"
        );
    }
}
