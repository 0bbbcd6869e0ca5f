//! A response's status and headers (a leaf: the cache stores it, fills share it).

use http::{HeaderMap, HeaderValue, StatusCode};

/// Status and headers, shared between every reader of one fill.
#[derive(Clone, Debug)]
pub struct ResponseHead {
    pub status: StatusCode,
    pub headers: HeaderMap,
}

impl ResponseHead {
    pub fn new(status: StatusCode) -> Self {
        ResponseHead {
            status,
            headers: HeaderMap::new(),
        }
    }

    /// A copy with room for `extra` more fields: the fields every response
    /// adds (Age, Cache-Status, Date, Via, CORS, …) then go in without
    /// growing the map one field at a time, as they would in a plain clone.
    pub fn with_room(&self, extra: usize) -> ResponseHead {
        let mut headers = HeaderMap::with_capacity(self.headers.len() + extra);
        for (name, value) in &self.headers {
            headers.append(name.clone(), value.clone());
        }
        ResponseHead {
            status: self.status,
            headers,
        }
    }

    pub fn header_str(&self, name: impl http::header::AsHeaderName) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn content_length(&self) -> Option<u64> {
        self.header_str(http::header::CONTENT_LENGTH)?
            .trim()
            .parse()
            .ok()
    }
}

/// The current time as an HTTP `Date` value (RFC 9110 §5.6.7): formatted
/// once a second per thread (a `Date` has one-second resolution), so every
/// response of that second shares one value.
pub fn date_now() -> HeaderValue {
    use std::cell::RefCell;
    use std::time::{SystemTime, UNIX_EPOCH};
    thread_local! {
        static DATE: RefCell<Option<(u64, HeaderValue)>> = const { RefCell::new(None) };
    }
    let now = SystemTime::now();
    let second = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    DATE.with_borrow_mut(|cached| match cached {
        Some((at, value)) if *at == second => value.clone(),
        _ => {
            let value = HeaderValue::from_str(&httpdate::fmt_http_date(now))
                .expect("an HTTP date is ASCII");
            *cached = Some((second, value.clone()));
            value
        }
    })
}

#[cfg(test)]
mod tests {
    use http::{HeaderValue, StatusCode};

    /// A roomy copy keeps every field, repeated ones in order.
    #[test]
    fn a_roomy_copy_keeps_every_field() {
        let mut head = super::ResponseHead::new(StatusCode::PARTIAL_CONTENT);
        head.headers.append("x-a", HeaderValue::from_static("1"));
        head.headers.append("x-a", HeaderValue::from_static("2"));
        head.headers
            .append("etag", HeaderValue::from_static("\"e\""));
        let copy = head.with_room(8);
        assert_eq!(copy.status, StatusCode::PARTIAL_CONTENT);
        assert_eq!(copy.headers, head.headers);
        let values: Vec<_> = copy.headers.get_all("x-a").iter().collect();
        assert_eq!(values, ["1", "2"]);
        assert!(copy.headers.capacity() >= head.headers.len() + 8);
    }

    /// The per-second cached `Date` is a valid HTTP date of now.
    #[test]
    fn date_now_is_the_current_http_date() {
        let before = std::time::SystemTime::now() - std::time::Duration::from_secs(1);
        let value = super::date_now();
        let parsed = httpdate::parse_http_date(value.to_str().expect("ascii")).expect("date");
        assert!(parsed >= before && parsed <= std::time::SystemTime::now());
        let again = super::date_now();
        let parsed_again = httpdate::parse_http_date(again.to_str().expect("ascii")).expect("date");
        assert!(parsed_again >= parsed);
    }
}
