//! The web console on the admin listener: read-only, server-rendered HTML with no
//! script and no external assets (everything is in the binary).
//!
//! - `/console`: keys with their types, versions, states and ages;
//! - `/console/audit`: the audit viewer, with the query filters of `/audit/query`;
//! - `/console/report`: the PCI DSS 3.6.4 cryptoperiod report of the keys in service.
//!
//! It takes the operator token like the other operator endpoints (a bearer header),
//! or from the `keymux_console` cookie that `POST /console/login` sets (HttpOnly,
//! SameSite=Strict, path `/console`). Without either a page redirects to the login
//! form. No page shows key material or a secret: names, versions, states and times.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use axum::Router;
use axum::extract::{Form, Query as Query_, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;

use super::live::LiveConfig;
use super::operator_http::{audit_files, authorize, parse_query};
use crate::audit::index::AuditIndex;
use crate::cli::report::{cryptoperiods, cryptoperiods_html};
use crate::keys::lifecycle::unix_now;
use crate::keys::{KeyRegistry, VersionState};

/// The cookie the login sets.
const COOKIE: &str = "keymux_console";

#[derive(Clone)]
struct ConsoleState {
    live: Arc<LiveConfig>,
    registry: Arc<KeyRegistry>,
}

/// The console's routes, to merge into the admin listener's router.
pub(super) fn routes(live: Arc<LiveConfig>, registry: Arc<KeyRegistry>) -> Router {
    Router::new()
        .route("/console", get(keys_page))
        .route("/console/audit", get(audit_page))
        .route("/console/report", get(report_page))
        .route("/console/login", get(login_page).post(login))
        .with_state(ConsoleState { live, registry })
}

/// The request's headers, with the console cookie's token as a bearer header when the
/// request carries no `Authorization` of its own.
fn with_cookie_token(headers: &HeaderMap) -> HeaderMap {
    let mut headers = headers.clone();
    if headers.contains_key(header::AUTHORIZATION) {
        return headers;
    }
    let token = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .find_map(|pair| pair.trim().strip_prefix(COOKIE).and_then(|rest| rest.strip_prefix('=')))
        .map(str::to_owned);
    if let Some(value) = token.and_then(|token| HeaderValue::from_str(&format!("Bearer {token}")).ok()) {
        headers.insert(header::AUTHORIZATION, value);
    }
    headers
}

/// `None` when the request may see the console; otherwise the answer to send (the
/// sign-in form for missing or wrong credentials).
fn check(state: &ConsoleState, headers: &HeaderMap) -> Option<Response> {
    let refusal = authorize(&state.live, &with_cookie_token(headers)).err()?;
    Some(if refusal.0 == StatusCode::UNAUTHORIZED {
        Redirect::to("/console/login").into_response()
    } else {
        refusal.into_response()
    })
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

const STYLE: &str = "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}\
    td,th{border:1px solid #999;padding:.3em .6em;text-align:left}th{background:#eee}\
    nav a{margin-right:1em}input{margin-right:.5em}";

fn page(title: &str, body: &str) -> Response {
    let html = format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>keymux: {title}</title>\
         <style>{STYLE}</style></head><body>\n<nav><a href=\"/console\">Keys</a><a href=\"/console/audit\">Audit</a>\
         <a href=\"/console/report\">PCI DSS 3.6.4</a><a href=\"/metrics\">Metrics</a></nav>\n<h1>{title}</h1>\n{body}\
         </body></html>\n",
        title = escape(title)
    );
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            (header::X_FRAME_OPTIONS, "DENY"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'",
            ),
        ],
        html,
    )
        .into_response()
}

fn ago(now: u64, since: u64) -> String {
    humantime::format_duration(Duration::from_secs(now.saturating_sub(since))).to_string()
}

async fn keys_page(State(state): State<ConsoleState>, headers: HeaderMap) -> Response {
    if let Some(answer) = check(&state, &headers) {
        return answer;
    }
    let now = unix_now();
    let mut rows = String::new();
    for key in state.registry.list() {
        let current = key.current_version().ok();
        for version in &key.versions {
            let status = match version.state {
                VersionState::Enabled if version.version < key.min_decryption_version => "retired",
                VersionState::Enabled => "enabled",
                VersionState::Disabled => "disabled",
            };
            let created =
                humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(version.created_at));
            let note = if current == Some(version.version) { "current" } else { "" };
            rows.push_str(&format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{status}</td><td>{created}</td><td>{}</td><td>{note}</td></tr>\n",
                escape(&key.name),
                escape(key.key_type.name()),
                version.version,
                ago(now, version.created_at),
            ));
        }
    }
    let body = format!(
        "<p>{} keys. Rotation timeline: each version's creation, oldest first.</p>\n<table id=\"keys\"><thead><tr>\
         <th>key</th><th>type</th><th>version</th><th>state</th><th>created</th><th>age</th><th></th></tr></thead>\
         <tbody>\n{rows}</tbody></table>\n",
        state.registry.list().len()
    );
    page("Keys", &body)
}

async fn audit_page(
    State(state): State<ConsoleState>,
    headers: HeaderMap,
    Query_(params): Query_<HashMap<String, String>>,
) -> Response {
    if let Some(answer) = check(&state, &headers) {
        return answer;
    }
    // Empty form fields mean "any".
    let params: HashMap<String, String> = params.into_iter().filter(|(_, value)| !value.is_empty()).collect();
    let query = match parse_query(&params) {
        Ok(query) => query,
        Err(refusal) => return refusal.into_response(),
    };
    let (log, index) = match audit_files(&state.live) {
        Ok(files) => files,
        Err(refusal) => return refusal.into_response(),
    };
    let live = Arc::clone(&state.live);
    let lines = tokio::task::spawn_blocking(move || {
        live.audit().sync();
        let mut index = AuditIndex::open(&index, &log)?;
        index.sync()?;
        index.query(&query)
    })
    .await;
    let lines = match lines {
        Ok(Ok(lines)) => lines,
        Ok(Err(error)) => return (StatusCode::INTERNAL_SERVER_ERROR, format!("{error}\n")).into_response(),
        Err(_) => return StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    };
    let field = |name: &str| escape(params.get(name).map_or("", String::as_str));
    let mut form = String::from("<form id=\"filters\" method=\"get\" action=\"/console/audit\">");
    for name in ["from", "to", "principal", "key", "op", "outcome", "limit"] {
        form.push_str(&format!("<label>{name} <input name=\"{name}\" value=\"{}\"></label>", field(name)));
    }
    form.push_str("<button type=\"submit\">Query</button></form>\n");
    let mut rows = String::new();
    for line in &lines {
        let Ok(record) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        let text = |name: &str| escape(record.get(name).and_then(|v| v.as_str()).unwrap_or_default());
        let what = [text("op"), text("action")].into_iter().find(|s| !s.is_empty()).unwrap_or_default();
        let detail = [text("detail"), text("reason"), text("error")]
            .into_iter()
            .find(|s| !s.is_empty())
            .unwrap_or_default();
        rows.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{what}</td><td>{detail}</td></tr>\n",
            record.get("seq").map(|v| v.to_string()).unwrap_or_default(),
            text("time"),
            text("event"),
            text("principal"),
            text("key"),
        ));
    }
    let body = format!(
        "{form}<p>{} records, newest first.</p>\n<table id=\"records\"><thead><tr><th>seq</th><th>time</th>\
         <th>event</th><th>principal</th><th>key</th><th>operation</th><th>detail</th></tr></thead><tbody>\n{rows}\
         </tbody></table>\n",
        lines.len()
    );
    page("Audit log", &body)
}

async fn report_page(State(state): State<ConsoleState>, headers: HeaderMap) -> Response {
    if let Some(answer) = check(&state, &headers) {
        return answer;
    }
    let keys: Vec<_> = state.registry.list().iter().map(|key| (**key).clone()).collect();
    let report = cryptoperiods(&keys, Duration::from_secs(365 * 86_400), unix_now());
    let html = cryptoperiods_html(&report);
    // The report's own page, with the console's navigation.
    let body = html.split_once("<body>").map_or(html.as_str(), |(_, body)| body);
    let body = body.trim_end().trim_end_matches("</html>").trim_end().trim_end_matches("</body>");
    let body = body.replacen("<h1>PCI DSS 3.6.4: key cryptoperiods</h1>", "", 1);
    page("PCI DSS 3.6.4: key cryptoperiods (365 days)", &body)
}

async fn login_page() -> Response {
    page(
        "Sign in",
        "<form id=\"login\" method=\"post\" action=\"/console/login\"><label>operator token \
         <input type=\"password\" name=\"token\" autocomplete=\"off\"></label>\
         <button type=\"submit\">Sign in</button></form>\n",
    )
}

async fn login(State(state): State<ConsoleState>, Form(form): Form<HashMap<String, String>>) -> Response {
    let token = form.get("token").cloned().unwrap_or_default();
    let mut headers = HeaderMap::new();
    if let Ok(value) = HeaderValue::from_str(&format!("Bearer {token}")) {
        headers.insert(header::AUTHORIZATION, value);
    }
    if let Err(refusal) = authorize(&state.live, &headers) {
        return refusal.into_response();
    }
    let cookie = format!("{COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/console");
    match HeaderValue::from_str(&cookie) {
        Ok(cookie) => ([(header::SET_COOKIE, cookie)], Redirect::to("/console")).into_response(),
        Err(_) => (StatusCode::BAD_REQUEST, "the token cannot go in a cookie\n").into_response(),
    }
}
