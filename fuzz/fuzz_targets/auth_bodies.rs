//! The accounts HTTP API's input handling (`chat_gateway::account_api`): any bytes as a
//! request body of every endpoint either parse or are refused with a message, and only
//! JSON objects (or a blank body) ever parse; any gRPC status details map to one of the
//! public errors; any `X-Forwarded-For` picks the peer or one of its own hops. Never
//! panics.

#![no_main]

use std::net::IpAddr;

use chat_gateway::account_api::{
    ApiError, DeleteBody, DisplayNameBody, LogInBody, MAX_BODY_BYTES, PasswordBody, RefreshBody,
    SignUpBody, parse_body,
};
use chat_gateway::client_addr::TrustedProxies;
use libfuzzer_sys::fuzz_target;
use serde::de::DeserializeOwned;

/// Parses `data` as `T`: a refusal explains itself; a success was a JSON object.
fn check<T: DeserializeOwned>(data: &[u8]) {
    match parse_body::<T>(data) {
        Ok(_) => {
            assert!(data.len() <= MAX_BODY_BYTES);
            let blank = data.iter().all(u8::is_ascii_whitespace);
            // A JSON object in UTF-8: checked without `Value`, which refuses numbers
            // beyond f64 (`1e999`) that JSON allows and an ignored field may hold.
            let object = std::str::from_utf8(data).is_ok()
                && data.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
                && serde_json::from_slice::<serde::de::IgnoredAny>(data).is_ok();
            assert!(blank || object, "parsed a body that is not a JSON object");
        }
        Err(message) => assert!(!message.is_empty()),
    }
}

fuzz_target!(|data: &[u8]| {
    check::<SignUpBody>(data);
    check::<LogInBody>(data);
    check::<RefreshBody>(data);
    check::<PasswordBody>(data);
    check::<DisplayNameBody>(data);
    check::<DeleteBody>(data);

    // Arbitrary status details (a broken or hostile accounts) map to a public error.
    let (&first, rest) = data.split_first().unwrap_or((&0, &[]));
    let code = tonic::Code::from_i32(i32::from(first % 17));
    let status = tonic::Status::with_details(code, "msg", rest.to_vec().into());
    let error = ApiError::from_status(&status);
    assert!(
        [400, 401, 409, 429, 500, 503].contains(&error.status.as_u16()),
        "{error:?}"
    );
    assert!(error.retry_after_secs.is_none_or(|s| s >= 1));

    // Any X-Forwarded-For behind a trusted proxy gives the peer or one of its hops.
    if let Ok(header) = std::str::from_utf8(data) {
        let proxies = TrustedProxies::parse("10.0.0.0/8, fd00::/8").expect("valid");
        let peer: IpAddr = [10, 0, 0, 1].into();
        let client = proxies.client_addr(peer, [header]);
        let hops_or_peer = client == peer
            || header.split(',').any(|hop| {
                let hop = hop.trim();
                hop.parse::<IpAddr>().map(|ip| ip.to_canonical()) == Ok(client)
                    || hop
                        .parse::<std::net::SocketAddr>()
                        .map(|s| s.ip().to_canonical())
                        == Ok(client)
            });
        assert!(hops_or_peer, "{client} from {header:?}");
        let _ = TrustedProxies::parse(header);
    }
});
