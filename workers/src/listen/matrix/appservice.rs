//! `listen = "appservice"`: Threadline as a Matrix Application Service (spec
//! `application-service-api`). The homeserver PUTs each transaction of events to
//! `/_matrix/app/v1/transactions/{txnId}` and retries it until it is answered 200, so a
//! transaction is answered 200 only after every event in it was taken, and 503 otherwise
//! (nothing acknowledged: the homeserver sends it again, and what was taken collapses). A
//! replayed transaction id is therefore answered 200 with nothing published again, without
//! keeping transaction ids: the intake's per-message dedup already is the idempotency.
//!
//! Every request must carry the `hs_token` (`listen_secret`), as `Authorization: Bearer`
//! or the legacy `access_token` query parameter: missing → 401 `M_UNAUTHORIZED`, wrong →
//! 403 `M_FORBIDDEN` (spec "Authorization"). Any number of replicas may serve this.

use super::events::{learn_names, Names};
use super::{take_events, Intake, ListenError, Routes};
use crate::io::metrics as m;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::Json;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use subtle::ConstantTimeEq;

/// Adds the appservice routes (and their legacy unversioned paths, which older homeservers
/// still call).
pub(super) fn start(intake: Intake, routes: &mut Routes) -> Result<(), ListenError> {
    match intake.ctx().config.listen_secret(intake.channel()) {
        Some(Ok(_)) => {}
        Some(Err(e)) => {
            return Err(ListenError::Config(format!(
                "cannot read the Matrix hs_token (listen_secret_file): {e}"
            )))
        }
        None => {
            return Err(ListenError::Config(
                "[matrix] listen = \"appservice\" needs the registration's hs_token as listen_secret (or listen_secret_file)".into(),
            ))
        }
    }
    routes.add(
        axum::Router::new()
            .route("/_matrix/app/v1/transactions/{txn_id}", put(transaction))
            .route("/transactions/{txn_id}", put(transaction))
            .route("/_matrix/app/v1/users/{user_id}", get(query_user))
            .route("/users/{user_id}", get(query_user))
            .route("/_matrix/app/v1/rooms/{alias}", get(query_room))
            .route("/rooms/{alias}", get(query_room))
            .route("/_matrix/app/v1/ping", post(ping))
            .with_state(intake),
    );
    Ok(())
}

/// A Matrix error answer: `{"errcode": …, "error": …}`.
fn error(status: StatusCode, errcode: &str, text: &str) -> Response {
    (status, Json(json!({"errcode": errcode, "error": text}))).into_response()
}

/// Why a request was not let in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refused {
    /// No `hs_token` given.
    Missing,
    /// Not the homeserver's `hs_token`.
    Wrong,
    /// Ours cannot be read (a missing or unreadable file): the homeserver should retry.
    Unconfigured,
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        match self {
            Refused::Missing => error(
                StatusCode::UNAUTHORIZED,
                "M_UNAUTHORIZED",
                "no hs_token given",
            ),
            Refused::Wrong => error(StatusCode::FORBIDDEN, "M_FORBIDDEN", "wrong hs_token"),
            Refused::Unconfigured => error(
                StatusCode::SERVICE_UNAVAILABLE,
                "M_UNKNOWN",
                "the appservice cannot read its token",
            ),
        }
    }
}

/// Checks the request's `hs_token` against ours (re-read, so a rotated file applies).
fn authorize(
    intake: &Intake,
    headers: &HeaderMap,
    query: &HashMap<String, String>,
) -> Result<(), Refused> {
    let header = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let legacy = query.get("access_token").map(String::as_str);
    let ours = match intake.ctx().config.listen_secret(intake.channel()) {
        Some(Ok(secret)) => secret,
        Some(Err(e)) => {
            tracing::error!(error = %e, "cannot read the Matrix hs_token");
            return Err(Refused::Unconfigured);
        }
        None => return Err(Refused::Unconfigured),
    };
    let Err(refused) = check(header, legacy, ours.expose()) else {
        return Ok(());
    };
    metrics::counter!(m::LISTEN_REFUSED, "channel" => intake.channel().to_owned(), "reason" => "signature")
        .increment(1);
    tracing::warn!(
        ?refused,
        "matrix appservice request refused: not the homeserver's token"
    );
    Err(refused)
}

/// Whether the presented token(s) are `ours`. "Application services should ensure both
/// match if both are provided" (spec application-service-api.md, "Authorisation"). The spec
/// names only `M_FORBIDDEN` (a token that does not match); none at all is the client-server
/// API's 401 `M_UNAUTHORIZED`, "the request was not correctly authorised".
fn check(header: Option<&str>, legacy: Option<&str>, ours: &str) -> Result<(), Refused> {
    let matches = |token: &str| bool::from(token.as_bytes().ct_eq(ours.as_bytes()));
    match (header, legacy) {
        (None, None) => Err(Refused::Missing),
        (Some(token), None) | (None, Some(token)) if matches(token) => Ok(()),
        (Some(a), Some(b)) if matches(a) && matches(b) => Ok(()),
        (Some(_), _) | (None, Some(_)) => Err(Refused::Wrong),
    }
}

async fn transaction(
    State(intake): State<Intake>,
    Path(txn_id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if let Err(refused) = authorize(&intake, &headers, &query) {
        return refused.into_response();
    }
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return error(
            StatusCode::BAD_REQUEST,
            "M_NOT_JSON",
            "the transaction is not JSON",
        );
    };
    let events = body["events"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    // Events in their order, per room; names from the member events the transaction carried.
    let mut rooms: BTreeMap<&str, Vec<Value>> = BTreeMap::new();
    let mut order: Vec<&str> = Vec::new();
    for event in events {
        let Some(room) = event["room_id"].as_str() else {
            continue;
        };
        if !rooms.contains_key(room) {
            order.push(room);
        }
        rooms.entry(room).or_default().push(event.clone());
    }
    for room in order {
        let room_events = rooms.get(room).map(Vec::as_slice).unwrap_or(&[]);
        let mut names = Names::new();
        learn_names(&mut names, room_events);
        if let Err(e) = take_events(&intake, room, room_events, &names).await {
            metrics::counter!(m::LISTEN_REFUSED, "channel" => intake.channel().to_owned(), "reason" => "unavailable")
                .increment(1);
            tracing::warn!(%txn_id, error = %e, "matrix appservice transaction not taken; the homeserver sends it again");
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "M_UNKNOWN",
                "not stored; send the transaction again",
            );
        }
    }
    tracing::debug!(%txn_id, events = events.len(), "matrix appservice transaction taken");
    Json(json!({})).into_response()
}

/// Threadline provisions no users: every queried one is unknown (spec "Query User").
async fn query_user(
    State(intake): State<Intake>,
    Path(_user_id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    if let Err(refused) = authorize(&intake, &headers, &query) {
        return refused.into_response();
    }
    error(StatusCode::NOT_FOUND, "M_NOT_FOUND", "no such user here")
}

/// Threadline provisions no rooms: every queried alias is unknown (spec "Query Room").
async fn query_room(
    State(intake): State<Intake>,
    Path(_alias): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    if let Err(refused) = authorize(&intake, &headers, &query) {
        return refused.into_response();
    }
    error(StatusCode::NOT_FOUND, "M_NOT_FOUND", "no such room here")
}

/// The homeserver checking we are reachable (spec "Pinging"): `{}`.
async fn ping(
    State(intake): State<Intake>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    if let Err(refused) = authorize(&intake, &headers, &query) {
        return refused.into_response();
    }
    (StatusCode::OK, Json(json!({}))).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_homeservers_token_lets_a_request_in() {
        assert_eq!(check(Some("hs"), None, "hs"), Ok(()));
        assert_eq!(check(None, Some("hs"), "hs"), Ok(()));
        assert_eq!(check(Some("hs"), Some("hs"), "hs"), Ok(()));
        assert_eq!(check(None, None, "hs"), Err(Refused::Missing));
        assert_eq!(check(Some("nope"), None, "hs"), Err(Refused::Wrong));
        assert_eq!(check(None, Some("hs-longer"), "hs"), Err(Refused::Wrong));
        // Both given: both must match.
        assert_eq!(check(Some("hs"), Some("nope"), "hs"), Err(Refused::Wrong));
        assert_eq!(check(Some("nope"), Some("hs"), "hs"), Err(Refused::Wrong));
    }

    #[test]
    fn refusals_answer_as_the_appservice_spec_says() {
        assert_eq!(
            Refused::Missing.into_response().status(),
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            Refused::Wrong.into_response().status(),
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            Refused::Unconfigured.into_response().status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
}
