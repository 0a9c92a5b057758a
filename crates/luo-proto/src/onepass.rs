//! Requests and replies read in one pass, for messages whose envelope
//! comes first, as every encoder here writes them: `"v"`, `"fds"` and
//! `"op"` (a reply: `"ok"`, `"v"`, `"fds"`) before the body's members.
//!
//! serde's internally tagged enums and `flatten` buffer the whole message
//! in its own tree first and then read that again; this reads the envelope
//! and hands the rest of the object straight to the body's `Deserialize`.
//! It only ever accepts: a message it cannot take (another order, a
//! duplicate, a wrong type, an unknown op, a refusal) gets `None`, and the
//! buffered path decides and words the refusal, so both paths accept the
//! same messages with the same meaning (tested in `tests`).

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use serde::de::value::{CowStrDeserializer, MapAccessDeserializer};
use serde::de::{self, DeserializeOwned, DeserializeSeed, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

use crate::{Request, VERSION};

/// A member's name, without an allocation for the envelope's own.
enum Key<'de> {
    V,
    Fds,
    Op,
    Ok,
    Other(Cow<'de, str>),
}

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Key<'de>, D::Error> {
        struct Names;
        impl<'de> Visitor<'de> for Names {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a member name")
            }
            fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Key<'de>, E> {
                Ok(Key::of(s).unwrap_or(Key::Other(Cow::Borrowed(s))))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Key<'de>, E> {
                Ok(Key::of(s).unwrap_or_else(|| Key::Other(Cow::Owned(s.to_owned()))))
            }
        }
        d.deserialize_str(Names)
    }
}

impl Key<'_> {
    fn of<'de>(s: &str) -> Option<Key<'de>> {
        Some(match s {
            "v" => Key::V,
            "fds" => Key::Fds,
            "op" => Key::Op,
            "ok" => Key::Ok,
            _ => return None,
        })
    }
}

/// A string value, borrowed from the message when it has no escapes.
struct Text<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Text<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Text<'de>, D::Error> {
        struct Chars;
        impl<'de> Visitor<'de> for Chars {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Borrowed(s)))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(s.to_owned())))
            }
        }
        d.deserialize_str(Chars)
    }
}

/// The envelope's members, each at most once.
#[derive(Default)]
struct Envelope {
    v: Option<u64>,
    fds: Option<u64>,
    ok: Option<bool>,
}

fn once<'de, T: Deserialize<'de>, A: MapAccess<'de>>(
    slot: &mut Option<T>,
    map: &mut A,
) -> Result<(), A::Error> {
    if slot.is_some() {
        return Err(de::Error::custom("a duplicate member"));
    }
    *slot = Some(map.next_value()?);
    Ok(())
}

impl Envelope {
    /// Reads the value of an envelope member; false for any other member.
    fn take<'de, A: MapAccess<'de>>(
        &mut self,
        key: &Key<'de>,
        reply: bool,
        map: &mut A,
    ) -> Result<bool, A::Error> {
        match key {
            Key::V => once(&mut self.v, map)?,
            Key::Fds => once(&mut self.fds, map)?,
            Key::Ok if reply => once(&mut self.ok, map)?,
            _ => return Ok(false),
        }
        Ok(true)
    }

    fn checks(&self, nfds: usize) -> bool {
        self.v == Some(VERSION) && self.fds == Some(nfds as u64)
    }
}

/// The members after the envelope, as the body's `Deserialize` sees
/// them: envelope members met on the way are kept aside, as the buffered
/// path's `flatten` does.
struct Body<'a, 'de, A> {
    map: A,
    envelope: &'a mut Envelope,
    reply: bool,
    /// A member name read before the body began (a reply's first).
    first: Option<Cow<'de, str>>,
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for Body<'_, 'de, A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        if let Some(name) = self.first.take() {
            return seed.deserialize(CowStrDeserializer::new(name)).map(Some);
        }
        loop {
            let Some(key) = self.map.next_key::<Key<'de>>()? else {
                return Ok(None);
            };
            if self.envelope.take(&key, self.reply, &mut self.map)? {
                continue;
            }
            let name = match key {
                Key::Other(name) => name,
                Key::Op if !self.reply => return Err(de::Error::custom("a second \"op\"")),
                Key::Op => Cow::Borrowed("op"),
                Key::Ok => Cow::Borrowed("ok"),
                // Taken by the envelope above.
                Key::V | Key::Fds => return Err(de::Error::custom("an envelope member")),
            };
            return seed.deserialize(CowStrDeserializer::new(name)).map(Some);
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, A::Error> {
        self.map.next_value_seed(seed)
    }
}

struct RequestVisitor<R>(PhantomData<R>);

impl<'de, R: Request> Visitor<'de> for RequestVisitor<R> {
    type Value = (Envelope, R);

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a request")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut envelope = Envelope::default();
        loop {
            let key = map
                .next_key::<Key<'de>>()?
                .ok_or_else(|| de::Error::custom("no \"op\""))?;
            if envelope.take(&key, false, &mut map)? {
                continue;
            }
            let Key::Op = key else {
                return Err(de::Error::custom("an argument before \"op\""));
            };
            let op: Text<'de> = map.next_value()?;
            let body = Body {
                map,
                envelope: &mut envelope,
                reply: false,
                first: None,
            };
            let args = MapAccessDeserializer::new(body);
            let request = R::args(&op.0, args).ok_or_else(|| de::Error::custom("unknown op"))??;
            return Ok((envelope, request));
        }
    }
}

struct ReplyVisitor<T>(PhantomData<T>);

impl<'de, T: DeserializeOwned> Visitor<'de> for ReplyVisitor<T> {
    type Value = (Envelope, T);

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a reply")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut envelope = Envelope::default();
        let first = loop {
            match map.next_key::<Key<'de>>()? {
                None => break None,
                Some(key) if envelope.take(&key, true, &mut map)? => {}
                Some(Key::Other(name)) => break Some(name),
                Some(Key::Op) => break Some(Cow::Borrowed("op")),
                // Taken by the envelope above.
                Some(_) => return Err(de::Error::custom("an envelope member")),
            }
        };
        // A refusal's members are not a `T`: the buffered path reads it.
        if envelope.ok != Some(true) {
            return Err(de::Error::custom("not a success"));
        }
        let body = Body {
            map,
            envelope: &mut envelope,
            reply: true,
            first,
        };
        let reply = T::deserialize(MapAccessDeserializer::new(body))?;
        Ok((envelope, reply))
    }
}

fn whole<'de, V: Visitor<'de>>(bytes: &'de [u8], visitor: V) -> Option<V::Value> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = de.deserialize_map(visitor).ok()?;
    de.end().ok()?;
    Some(value)
}

/// The request, when it reads in one pass and its envelope checks out.
pub(crate) fn request<R: Request>(bytes: &[u8], nfds: usize) -> Option<R> {
    let (envelope, r) = whole(bytes, RequestVisitor::<R>(PhantomData))?;
    envelope.checks(nfds).then_some(r)
}

/// A success's members, when they read in one pass and the envelope
/// checks out.
pub(crate) fn reply<T: DeserializeOwned>(bytes: &[u8], nfds: usize) -> Option<T> {
    let (envelope, t) = whole(bytes, ReplyVisitor::<T>(PhantomData))?;
    envelope.checks(nfds).then_some(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::{
        AgentRequest, CreateSession, Done, HandleRequest, Info, Preserve, Preserved, SessionName,
    };
    use serde_json::{Map, Value};

    /// The buffered path alone.
    fn buffered<R: Request>(bytes: &[u8], nfds: usize) -> Option<R> {
        let m: crate::In<R> = serde_json::from_slice(bytes).ok()?;
        (m.v == VERSION && m.fds == nfds as u64).then_some(m.body)
    }

    /// `members` as an object in the order given.
    fn object(members: &[(&str, Value)]) -> Vec<u8> {
        let mut s = String::from("{");
        for (i, (k, v)) in members.iter().enumerate() {
            if i > 0 {
                s.push(',');
            }
            s.push_str(&format!("{}:{v}", Value::String((*k).into())));
        }
        s.push('}');
        s.into_bytes()
    }

    fn agree<R: Request + std::fmt::Debug + PartialEq>(bytes: &[u8], nfds: usize) {
        let fast = request::<R>(bytes, nfds);
        let slow = buffered::<R>(bytes, nfds);
        let text = String::from_utf8_lossy(bytes);
        if let Some(f) = &fast {
            assert_eq!(Some(f), slow.as_ref(), "one pass accepted {text} otherwise");
        }
        assert_eq!(
            crate::decode_request::<R>(bytes, nfds).ok(),
            slow,
            "decode_request differs from the buffered path on {text}"
        );
    }

    #[test]
    fn the_encoders_order_reads_in_one_pass() {
        let bytes = crate::encode_request(&Preserve { tokens: vec![3, 9] }, 2).unwrap();
        let r = request::<HandleRequest>(&bytes, 2).unwrap();
        assert_eq!(r, HandleRequest::Preserve(Preserve { tokens: vec![3, 9] }));
        let bytes = crate::encode_request(
            &CreateSession {
                name: "k\"v".into(),
            },
            0,
        )
        .unwrap();
        assert!(request::<AgentRequest>(&bytes, 0).is_some());
        let bytes = crate::encode_reply(&Preserved { preserved: 4 }, 0).unwrap();
        assert_eq!(
            reply::<Preserved>(&bytes, 0),
            Some(Preserved { preserved: 4 })
        );
        let bytes = crate::encode_reply(&Done {}, 1).unwrap();
        assert_eq!(reply::<Done>(&bytes, 1), Some(Done {}));
        let name = SessionName {
            name: "\u{e9}\\".into(),
        };
        let bytes = crate::encode_reply(&name, 0).unwrap();
        assert_eq!(reply::<SessionName>(&bytes, 0), Some(name));
    }

    #[test]
    fn both_paths_agree_on_every_order_and_defect() {
        let one = |v: Value| v;
        let members: Vec<(&str, Value)> = vec![
            ("v", one(1.into())),
            ("fds", one(0.into())),
            ("op", one("info".into())),
            ("start", one(2.into())),
        ];
        // Every order of the four members.
        let mut orders = vec![vec![0usize, 1, 2, 3]];
        for _ in 0..23 {
            let mut next = orders.last().unwrap().clone();
            // Next permutation.
            let i = (0..3).rev().find(|&i| next[i] < next[i + 1]).unwrap();
            let j = (i + 1..4).rev().find(|&j| next[j] > next[i]).unwrap();
            next.swap(i, j);
            next[i + 1..].reverse();
            orders.push(next);
        }
        for order in &orders {
            let m: Vec<_> = order.iter().map(|&i| members[i].clone()).collect();
            let bytes = object(&m);
            agree::<HandleRequest>(&bytes, 0);
            assert!(crate::decode_request::<HandleRequest>(&bytes, 0).is_ok());
        }
        let defects: Vec<Vec<(&str, Value)>> = vec![
            // Duplicates, before and after "op".
            vec![
                ("v", 1.into()),
                ("v", 1.into()),
                ("fds", 0.into()),
                ("op", "name".into()),
            ],
            vec![
                ("v", 1.into()),
                ("fds", 0.into()),
                ("op", "name".into()),
                ("v", 1.into()),
            ],
            vec![
                ("v", 1.into()),
                ("fds", 0.into()),
                ("op", "name".into()),
                ("op", "name".into()),
            ],
            vec![
                ("v", 1.into()),
                ("fds", 0.into()),
                ("op", "info".into()),
                ("start", 1.into()),
                ("start", 1.into()),
            ],
            // Unknown, misplaced and mistyped members.
            vec![
                ("v", 1.into()),
                ("fds", 0.into()),
                ("op", "name".into()),
                ("ok", true.into()),
            ],
            vec![
                ("v", 1.into()),
                ("fds", 0.into()),
                ("op", "name".into()),
                ("pad", 1.into()),
            ],
            vec![("v", 1.into()), ("fds", 0.into()), ("op", "nope".into())],
            vec![
                ("v", 1.into()),
                ("fds", 0.into()),
                ("op", "create_session".into()),
            ],
            vec![("v", 2.into()), ("fds", 0.into()), ("op", "name".into())],
            vec![("v", 1.into()), ("fds", 1.into()), ("op", "name".into())],
            vec![("v", 1.into()), ("op", "name".into())],
            vec![("fds", 0.into()), ("op", "name".into())],
            vec![("v", "1".into()), ("fds", 0.into()), ("op", "name".into())],
            vec![
                ("v", 1.into()),
                ("fds", 0.into()),
                ("op", "info".into()),
                ("start", (-1).into()),
            ],
            vec![
                ("v", 1.into()),
                ("fds", 0.into()),
                ("op", "info".into()),
                ("start", Value::Null),
            ],
            vec![
                ("v", 1.into()),
                ("fds", 0.into()),
                ("op", "info".into()),
                ("start", 1.5.into()),
            ],
            vec![
                ("v", 1.into()),
                ("fds", 0.into()),
                ("op", "preserve".into()),
                ("tokens", Value::Array(vec![])),
            ],
            vec![
                ("v", 1.into()),
                ("fds", 0.into()),
                ("op", "preserve".into()),
            ],
            vec![
                ("v", 1.into()),
                ("fds", 0.into()),
                ("op", "name".into()),
                ("start", Value::Object(Map::new())),
            ],
        ];
        for m in &defects {
            agree::<HandleRequest>(&object(m), 0);
            agree::<AgentRequest>(&object(m), 0);
        }
        // Escaped member names are the same names.
        agree::<HandleRequest>(br#"{"\u0076":1,"fds":0,"o\u0070":"n\u0061me"}"#, 0);
        assert_eq!(
            request::<HandleRequest>(br#"{"\u0076":1,"fds":0,"o\u0070":"n\u0061me"}"#, 0),
            Some(HandleRequest::Name(crate::ops::Name {}))
        );
        assert_eq!(
            request::<HandleRequest>(br#"{"v":1,"fds":0,"op":"info","start":null}"#, 0),
            Some(HandleRequest::Info(Info { start: None }))
        );
    }

    #[test]
    fn replies_agree_with_the_buffered_path() {
        let cases: &[&[u8]] = &[
            br#"{"ok":true,"v":1,"fds":0,"preserved":2}"#,
            br#"{"v":1,"ok":true,"preserved":2,"fds":0}"#,
            br#"{"preserved":2,"ok":true,"v":1,"fds":0}"#,
            br#"{"ok":true,"v":1,"fds":0,"preserved":2,"extra":1}"#,
            br#"{"ok":true,"v":1,"fds":0,"preserved":2,"preserved":3}"#,
            br#"{"ok":true,"ok":true,"v":1,"fds":0,"preserved":2}"#,
            br#"{"ok":true,"v":1,"fds":1,"preserved":2}"#,
            br#"{"ok":true,"v":1,"fds":0}"#,
            br#"{"ok":false,"v":1,"fds":0,"errno":1,"error":"EPERM","message":"m"}"#,
            br#"{"ok":true,"v":2,"fds":0,"preserved":2}"#,
        ];
        for bytes in cases {
            let slow = serde_json::from_slice::<crate::ReplyIn<Preserved>>(bytes)
                .ok()
                .filter(|r| r.ok && r.v == VERSION && r.fds == 0)
                .map(|r| r.body);
            let text = String::from_utf8_lossy(bytes);
            if let Some(fast) = reply::<Preserved>(bytes, 0) {
                assert_eq!(Some(fast), slow, "one pass read {text} otherwise");
            }
            assert_eq!(
                crate::decode_reply::<Preserved>(bytes, 0).ok(),
                slow,
                "{text}"
            );
        }
    }
}
