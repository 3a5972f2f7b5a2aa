//! One request or a `batch_input` of many, the same way: every item is prepared (its
//! fields decoded) into a router request or an error of its own, the prepared ones go
//! to the router together ([`FrontDoor::call_many`](crate::frontend::FrontDoor::call_many),
//! so they batch on the key queues), and the answers come back in order.
//!
//! Vault's statuses for a batch: 200 when every item succeeded; when any failed, 400 if
//! a failure is of the client's making, else the first failure's status (429 with
//! Retry-After when the key was busy, 503 when the backend is down, 500), and
//! `partial_failure_response_code` instead when some items succeeded. The body holds
//! every item's result either way.

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use keymux_protocol::{Reply, Request};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::VaultState;
use super::auth::Caller;
use super::error::VaultError;
use super::reply::{envelope, wrapped};
use crate::frontend::CallOptions;

/// A request body as every batching endpoint takes it: the fields of one item at the
/// top level, or a `batch_input` list of items (the top-level fields then ignored).
#[derive(Debug, Deserialize)]
pub(super) struct Batchable<T> {
    #[serde(flatten)]
    single: T,
    batch_input: Option<Vec<T>>,
    partial_failure_response_code: Option<u16>,
}

/// An item that may carry a `reference`, echoed in its result.
pub(super) trait Referenced {
    /// The item's `reference`, if it has one.
    fn reference(&self) -> Option<&str>;
}

/// The items of a request and how to answer them.
pub(super) struct Items<T> {
    /// The items, one for a request without `batch_input`.
    pub(super) items: Vec<T>,
    batch: bool,
    partial_failure_code: Option<StatusCode>,
}

impl<T> Batchable<T> {
    /// The items, at most `max` of them.
    pub(super) fn into_items(self, max: usize) -> Result<Items<T>, VaultError> {
        let partial_failure_code = match self.partial_failure_response_code {
            None => None,
            Some(code) => Some(
                StatusCode::from_u16(code)
                    .ok()
                    .filter(|code| code.is_success() || code.is_client_error() || code.is_server_error())
                    .ok_or_else(|| VaultError::BadRequest("invalid partial_failure_response_code".into()))?,
            ),
        };
        match self.batch_input {
            None => Ok(Items { items: vec![self.single], batch: false, partial_failure_code }),
            Some(items) if items.is_empty() => {
                Err(VaultError::BadRequest("missing batch input to process".into()))
            }
            Some(items) if items.len() > max => Err(VaultError::BadRequest(format!(
                "batch_input has {} items; this server takes at most {max} (vault.max_batch_items)",
                items.len()
            ))),
            Some(items) => Ok(Items { items, batch: true, partial_failure_code }),
        }
    }
}

impl<T: Referenced> Items<T> {
    /// Prepares every item with `prepare`, runs the prepared ones through the router
    /// together, and turns each answer into its JSON fields with `render`. `failed`
    /// adds the fields a failed item still carries in Vault's output.
    pub(super) async fn run(
        self,
        state: &VaultState,
        caller: &Caller,
        prepare: impl Fn(&T) -> Result<Request, VaultError>,
        render: impl Fn(Reply) -> Result<Map<String, Value>, VaultError>,
        failed: fn(&mut Map<String, Value>),
    ) -> Response {
        let references: Vec<String> =
            self.items.iter().map(|item| item.reference().unwrap_or_default().to_owned()).collect();
        let prepared: Vec<Result<Request, VaultError>> = self.items.iter().map(prepare).collect();
        drop(self.items);
        let mut slots: Vec<Option<Result<Reply, VaultError>>> = Vec::with_capacity(prepared.len());
        let mut requests = Vec::with_capacity(prepared.len());
        for item in prepared {
            match item {
                Ok(request) => {
                    slots.push(None);
                    requests.push(request);
                }
                Err(error) => slots.push(Some(Err(error))),
            }
        }
        let options = CallOptions { timeout: Some(state.request_timeout), bypass_cache: false };
        let mut answers =
            state.wiring.front_door.call_many(&caller.peer, requests, options).await.into_iter();
        let results: Vec<Result<Map<String, Value>, VaultError>> = slots
            .into_iter()
            .map(|slot| {
                let answer = slot.unwrap_or_else(|| match answers.next() {
                    Some(answer) => answer.map_err(VaultError::from),
                    None => Err(VaultError::Internal("an item went unanswered".into())),
                });
                answer.and_then(&render)
            })
            .collect();
        if !self.batch {
            return match results.into_iter().next() {
                Some(Ok(data)) => envelope(Value::Object(data)),
                Some(Err(error)) => error.into_response(),
                None => VaultError::Internal("no answer".into()).into_response(),
            };
        }
        respond_batch(results, references, self.partial_failure_code, failed)
    }
}

fn respond_batch(
    results: Vec<Result<Map<String, Value>, VaultError>>,
    references: Vec<String>,
    partial_failure_code: Option<StatusCode>,
    failed: fn(&mut Map<String, Value>),
) -> Response {
    let succeeded = results.iter().filter(|result| result.is_ok()).count();
    let first_error = results.iter().find_map(|result| result.as_ref().err()).cloned();
    let any_user_error =
        results.iter().any(|result| result.as_ref().err().is_some_and(VaultError::is_user_error));
    let items: Vec<Value> = results
        .into_iter()
        .zip(references)
        .map(|(result, reference)| {
            let mut fields = match result {
                Ok(fields) => fields,
                Err(error) => {
                    let mut fields = Map::new();
                    failed(&mut fields);
                    fields.insert("error".into(), json!(error.to_string()));
                    fields
                }
            };
            fields.insert("reference".into(), json!(reference));
            Value::Object(fields)
        })
        .collect();
    let body = axum::Json(wrapped(json!({ "batch_results": items })));
    let Some(error) = first_error else { return body.into_response() };
    if succeeded > 0 {
        if let Some(code) = partial_failure_code {
            return (code, body).into_response();
        }
    }
    let status = if any_user_error { StatusCode::BAD_REQUEST } else { error.status() };
    let retry_after = error.clone().into_response().headers().get(header::RETRY_AFTER).cloned();
    let mut response = (status, body).into_response();
    if let (false, Some(retry_after)) = (any_user_error, retry_after) {
        response.headers_mut().insert(header::RETRY_AFTER, retry_after);
    }
    response
}
