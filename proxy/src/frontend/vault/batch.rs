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
//!
//! Bodies are read without serde's `flatten` (which buffers every field of every item
//! before reading it again): the batch part and a single item are each read from the
//! body by their own struct, unknown fields skipped.

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use keymux_protocol::{Reply, Request};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::VaultState;
use super::auth::Caller;
use super::error::VaultError;
use super::reply::{Envelope, parse_json};
use crate::frontend::CallOptions;

/// An item that may carry a `reference`, echoed in its result.
pub(super) trait Referenced {
    /// The item's `reference`, if it has one.
    fn reference(&self) -> Option<&str>;
}

/// What an item's success looks like in Vault's output.
pub(super) trait ItemOutput: Serialize {
    /// The fields a failed item still carries (Vault's decrypt gives an empty
    /// plaintext); none by default.
    fn on_failure() -> Option<Self>
    where
        Self: Sized,
    {
        None
    }
}

/// The batch part of a body.
#[derive(Debug, Deserialize)]
struct BatchPart<T> {
    #[serde(default = "Option::default")]
    batch_input: Option<Vec<T>>,
    #[serde(default)]
    partial_failure_response_code: Option<u16>,
}

/// The items of a request and how to answer them.
pub(super) struct Items<T> {
    /// The items, one for a request without `batch_input`.
    pub(super) items: Vec<T>,
    batch: bool,
    partial_failure_code: Option<StatusCode>,
}

impl<T: DeserializeOwned> Items<T> {
    /// The items of `body`: its `batch_input` (at most `max` items), or the body itself
    /// as one item.
    pub(super) fn parse(body: &[u8], max: usize) -> Result<Self, VaultError> {
        let part: BatchPart<T> = parse_json(body)?;
        let partial_failure_code = match part.partial_failure_response_code {
            None => None,
            Some(code) => Some(
                StatusCode::from_u16(code)
                    .ok()
                    .filter(|code| code.is_success() || code.is_client_error() || code.is_server_error())
                    .ok_or_else(|| VaultError::BadRequest("invalid partial_failure_response_code".into()))?,
            ),
        };
        match part.batch_input {
            None => Ok(Items { items: vec![parse_json(body)?], batch: false, partial_failure_code }),
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

/// One item's result in `batch_results`.
#[derive(Serialize)]
struct BatchItem<O> {
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    output: Option<O>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    reference: String,
}

/// `data` of a batch answer.
#[derive(Serialize)]
struct BatchResults<O> {
    batch_results: Vec<BatchItem<O>>,
}

impl<T: Referenced> Items<T> {
    /// Prepares every item with `prepare`, runs the prepared ones through the router
    /// together, and turns each answer into its output with `render`.
    pub(super) async fn run<O: ItemOutput>(
        self,
        state: &VaultState,
        caller: &Caller,
        prepare: impl Fn(&T) -> Result<Request, VaultError>,
        render: impl Fn(Reply) -> Result<O, VaultError>,
    ) -> Response {
        let references: Vec<String> = if self.batch {
            self.items.iter().map(|item| item.reference().unwrap_or_default().to_owned()).collect()
        } else {
            Vec::new()
        };
        let prepared: Vec<Result<Request, VaultError>> = self.items.iter().map(prepare).collect();
        drop(self.items);
        let mut slots: Vec<Option<VaultError>> = Vec::with_capacity(prepared.len());
        let mut requests = Vec::with_capacity(prepared.len());
        for item in prepared {
            match item {
                Ok(request) => {
                    slots.push(None);
                    requests.push(request);
                }
                Err(error) => slots.push(Some(error)),
            }
        }
        let options = CallOptions { timeout: Some(state.request_timeout), bypass_cache: false };
        let mut answers =
            state.wiring.front_door.call_many(&caller.peer, requests, options).await.into_iter();
        let results: Vec<Result<O, VaultError>> = slots
            .into_iter()
            .map(|slot| match slot {
                Some(error) => Err(error),
                None => match answers.next() {
                    Some(answer) => answer.map_err(VaultError::from).and_then(&render),
                    None => Err(VaultError::Internal("an item went unanswered".into())),
                },
            })
            .collect();
        if !self.batch {
            return match results.into_iter().next() {
                Some(Ok(data)) => Envelope::new(data).into_response(),
                Some(Err(error)) => error.into_response(),
                None => VaultError::Internal("no answer".into()).into_response(),
            };
        }
        respond_batch(results, references, self.partial_failure_code)
    }
}

fn respond_batch<O: ItemOutput>(
    results: Vec<Result<O, VaultError>>,
    references: Vec<String>,
    partial_failure_code: Option<StatusCode>,
) -> Response {
    let succeeded = results.iter().filter(|result| result.is_ok()).count();
    let first_error = results.iter().find_map(|result| result.as_ref().err()).cloned();
    let any_user_error =
        results.iter().any(|result| result.as_ref().err().is_some_and(VaultError::is_user_error));
    let batch_results = results
        .into_iter()
        .zip(references)
        .map(|(result, reference)| match result {
            Ok(output) => BatchItem { output: Some(output), error: None, reference },
            Err(error) => BatchItem { output: O::on_failure(), error: Some(error.to_string()), reference },
        })
        .collect();
    let body = Envelope::new(BatchResults { batch_results });
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
