//! The dashboard's HTTP routes: authentication on every one, CSRF on every POST, and the
//! read-only switch.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::Datelike as _;

use super::auth::{COOKIE, Caller, SESSION_SECONDS};
use super::images::{PLACEHOLDER_SVG, Picture};
use super::{Dashboard, FAILED_SCAN, views};
use crate::store::DesignStatus;

/// How many recent completed rows the duration percentiles are taken over.
const DURATION_SAMPLE: usize = 200;

/// How many tenants the tenants page lists.
const TENANTS_SHOWN: usize = 100;

type Shared = State<Arc<Dashboard>>;

/// The routes under `/dashboard`.
pub fn router(dashboard: Arc<Dashboard>) -> axum::Router {
    axum::Router::new()
        .route("/dashboard", get(overview))
        .route("/dashboard/login", get(login_page).post(login))
        .route("/dashboard/logout", post(logout))
        .route("/dashboard/renders", get(renders))
        .route("/dashboard/renders/{design}", get(render_detail))
        .route("/dashboard/failed", get(failed))
        .route("/dashboard/failed/retry-code", post(retry_code))
        .route("/dashboard/failed/{job}/retry", post(retry_one))
        .route("/dashboard/tenants", get(tenants))
        .route("/dashboard/workers", get(workers))
        .route("/dashboard/images/{design}/{asset}", get(image))
        .with_state(dashboard)
}

fn now_seconds() -> i64 {
    chrono::Utc::now().timestamp()
}

/// The authenticated caller: the token as a bearer header, or a valid session cookie.
fn caller(dashboard: &Dashboard, headers: &HeaderMap) -> Option<Caller> {
    if let Some(token) = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
    {
        return dashboard.access.token_matches(token).then_some(Caller::Bearer);
    }
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .filter(|(name, _)| *name == COOKIE)
        .find_map(|(_, value)| dashboard.access.session(value, now_seconds()))
}

/// An HTML page with the headers every dashboard answer carries: nothing cached, no framing, no
/// script, nothing loaded from elsewhere.
fn page(status: StatusCode, html: String) -> Response {
    let mut response = (status, html).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    secure(headers);
    response
}

fn secure(headers: &mut HeaderMap) {
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; img-src 'self' data:; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'",
        ),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
}

fn unauthorized(message: Option<&str>) -> Response {
    let mut response = page(StatusCode::UNAUTHORIZED, views::login(message));
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(r#"Bearer realm="design-render dashboard""#),
    );
    response
}

fn see_other(location: &str) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    if let Ok(value) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    secure(response.headers_mut());
    response
}

fn forbidden(why: &str) -> Response {
    page(StatusCode::FORBIDDEN, views::message("Refused", why))
}

/// The answer refusing a state-changing request: no credentials, read-only, or no valid CSRF
/// token for this caller. `None`: go ahead.
fn refusal(dashboard: &Dashboard, headers: &HeaderMap, form: &HashMap<String, String>) -> Option<Response> {
    let Some(caller) = caller(dashboard, headers) else {
        return Some(unauthorized(None));
    };
    if dashboard.read_only {
        return Some(forbidden("The dashboard is read-only (DASHBOARD_READ_ONLY=true)."));
    }
    let offered = form.get("csrf").map(String::as_str).unwrap_or_default();
    if !dashboard.access.csrf_matches(&caller, offered) {
        return Some(forbidden(
            "The form's CSRF token is missing or wrong; reload the page and try again.",
        ));
    }
    None
}

fn context(dashboard: &Dashboard, caller: &Caller, current: &'static str) -> views::Context {
    views::Context {
        current,
        csrf: dashboard.access.csrf(caller),
        read_only: dashboard.read_only,
        session: matches!(caller, Caller::Session(_)),
    }
}

async fn login_page(State(dashboard): Shared, headers: HeaderMap) -> Response {
    if caller(&dashboard, &headers).is_some() {
        return see_other("/dashboard");
    }
    page(StatusCode::OK, views::login(None))
}

async fn login(State(dashboard): Shared, headers: HeaderMap, Form(form): Form<HashMap<String, String>>) -> Response {
    let offered = form.get("token").map(String::as_str).unwrap_or_default();
    if !dashboard.access.token_matches(offered) {
        tracing::warn!("A dashboard login with a wrong token was refused");
        return unauthorized(Some("That is not the dashboard token."));
    }
    let session = match dashboard.access.new_session(now_seconds()) {
        Ok(session) => session,
        Err(error) => {
            tracing::error!("No randomness for a dashboard session: {error}");
            return page(
                StatusCode::INTERNAL_SERVER_ERROR,
                views::message("Error", "No session could be made."),
            );
        }
    };
    // `Secure` when a TLS proxy in front says the browser speaks HTTPS.
    let secure = headers
        .get("x-forwarded-proto")
        .is_some_and(|value| value.as_bytes().eq_ignore_ascii_case(b"https"));
    let cookie = format!(
        "{COOKIE}={session}; Path=/dashboard; HttpOnly; SameSite=Strict; Max-Age={SESSION_SECONDS}{}",
        if secure { "; Secure" } else { "" }
    );
    let mut response = see_other("/dashboard");
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

async fn logout(State(dashboard): Shared, headers: HeaderMap, Form(form): Form<HashMap<String, String>>) -> Response {
    let Some(caller) = caller(&dashboard, &headers) else {
        return unauthorized(None);
    };
    let offered = form.get("csrf").map(String::as_str).unwrap_or_default();
    if !dashboard.access.csrf_matches(&caller, offered) {
        return forbidden("The form's CSRF token is missing or wrong.");
    }
    let mut response = see_other("/dashboard/login");
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("design_render_dashboard=; Path=/dashboard; HttpOnly; SameSite=Strict; Max-Age=0"),
    );
    response
}

async fn overview(State(dashboard): Shared, headers: HeaderMap) -> Response {
    let Some(caller) = caller(&dashboard, &headers) else {
        return unauthorized(None);
    };
    let (queues, codes, recent) = tokio::join!(
        dashboard.operations.queues(),
        dashboard.operations.failures_by_code(FAILED_SCAN),
        dashboard.designs.recent(DesignStatus::Completed, 0, DURATION_SAMPLE),
    );
    let mut durations: Vec<f64> = recent
        .as_deref()
        .unwrap_or_default()
        .iter()
        .filter_map(|row| row.metadata.as_ref()?.get("timings")?.get("totalMs")?.as_f64())
        .collect();
    durations.sort_by(f64::total_cmp);
    let stats = views::Durations {
        p50_ms: super::quantile(&durations, 0.5),
        p95_ms: super::quantile(&durations, 0.95),
        sample: durations.len(),
    };
    let ctx = context(&dashboard, &caller, "overview");
    page(
        StatusCode::OK,
        views::overview(&ctx, queues, codes, recent.err().map(|error| error.to_string()), &stats),
    )
}

#[derive(serde::Deserialize)]
struct PageQuery {
    page: Option<usize>,
    size: Option<String>,
}

async fn renders(State(dashboard): Shared, headers: HeaderMap, Query(query): Query<PageQuery>) -> Response {
    let Some(caller) = caller(&dashboard, &headers) else {
        return unauthorized(None);
    };
    let page_number = query.page.unwrap_or(1).max(1);
    let offset = (page_number - 1).saturating_mul(dashboard.page_size);
    let rows = dashboard
        .designs
        .recent(DesignStatus::Completed, offset, dashboard.page_size)
        .await
        .map_err(|error| error.to_string());
    let ctx = context(&dashboard, &caller, "renders");
    page(
        StatusCode::OK,
        views::renders(&ctx, rows, page_number, dashboard.page_size),
    )
}

async fn render_detail(State(dashboard): Shared, headers: HeaderMap, Path(design): Path<String>) -> Response {
    let Some(caller) = caller(&dashboard, &headers) else {
        return unauthorized(None);
    };
    let ctx = context(&dashboard, &caller, "renders");
    let Ok(id) = crate::job::DesignId::parse(&design) else {
        return page(StatusCode::NOT_FOUND, views::message("Not found", "No such design."));
    };
    match dashboard.designs.get(&id).await {
        Ok(Some(row)) => page(StatusCode::OK, views::render_detail(&ctx, &row)),
        Ok(None) => page(StatusCode::NOT_FOUND, views::message("Not found", "No such design.")),
        Err(error) => page(
            StatusCode::SERVICE_UNAVAILABLE,
            views::message("Database unavailable", &error.to_string()),
        ),
    }
}

async fn failed(State(dashboard): Shared, headers: HeaderMap, Query(query): Query<PageQuery>) -> Response {
    let Some(caller) = caller(&dashboard, &headers) else {
        return unauthorized(None);
    };
    let page_number = query.page.unwrap_or(1).max(1);
    let offset = (page_number - 1).saturating_mul(dashboard.page_size);
    let (jobs, codes) = tokio::join!(
        dashboard.operations.failed(offset, dashboard.page_size),
        dashboard.operations.failures_by_code(FAILED_SCAN),
    );
    let ctx = context(&dashboard, &caller, "failed");
    page(
        StatusCode::OK,
        views::failed(&ctx, jobs, codes, page_number, dashboard.page_size),
    )
}

async fn retry_one(
    State(dashboard): Shared,
    headers: HeaderMap,
    Path(job): Path<String>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    if let Some(refused) = refusal(&dashboard, &headers, &form) {
        return refused;
    }
    match dashboard.operations.retry(&job).await {
        Ok(moved) => {
            tracing::info!("Dashboard: failed job {job} retried ({moved})");
            see_other("/dashboard/failed")
        }
        Err(error) => page(StatusCode::SERVICE_UNAVAILABLE, views::message("Retry failed", &error)),
    }
}

async fn retry_code(
    State(dashboard): Shared,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    if let Some(refused) = refusal(&dashboard, &headers, &form) {
        return refused;
    }
    let code = form.get("code").map(String::as_str).unwrap_or_default();
    match dashboard.operations.retry_code(code, FAILED_SCAN).await {
        Ok(count) => {
            tracing::info!("Dashboard: {count} failed jobs with code {code} retried");
            see_other("/dashboard/failed")
        }
        Err(error) => page(StatusCode::SERVICE_UNAVAILABLE, views::message("Retry failed", &error)),
    }
}

async fn tenants(State(dashboard): Shared, headers: HeaderMap) -> Response {
    let Some(caller) = caller(&dashboard, &headers) else {
        return unauthorized(None);
    };
    let now = chrono::Utc::now();
    let day = now
        .date_naive()
        .and_hms_opt(0, 0, 0)
        .map(|start| start.and_utc())
        .unwrap_or(now);
    let month = now
        .date_naive()
        .with_day(1)
        .and_then(|first| first.and_hms_opt(0, 0, 0))
        .map(|start| start.and_utc())
        .unwrap_or(now);
    let (today, this_month) = tokio::join!(
        dashboard.designs.cost_by_tenant(day, TENANTS_SHOWN),
        dashboard.designs.cost_by_tenant(month, TENANTS_SHOWN),
    );
    let mut names: Vec<String> = this_month
        .as_deref()
        .unwrap_or_default()
        .iter()
        .map(|cost| cost.tenant_id.clone())
        .collect();
    names.sort();
    let slots = dashboard.operations.tenant_slots(&names).await;
    let ctx = context(&dashboard, &caller, "tenants");
    page(
        StatusCode::OK,
        views::tenants(
            &ctx,
            views::TenantData {
                slots,
                today: today.map_err(|error| error.to_string()),
                month: this_month.map_err(|error| error.to_string()),
                limits: &dashboard.tenant_limits,
            },
        ),
    )
}

async fn workers(State(dashboard): Shared, headers: HeaderMap) -> Response {
    let Some(caller) = caller(&dashboard, &headers) else {
        return unauthorized(None);
    };
    let workers = dashboard.operations.workers().await;
    let now_ms = u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap_or(0);
    let ctx = context(&dashboard, &caller, "workers");
    page(StatusCode::OK, views::workers(&ctx, workers, now_ms))
}

/// The URL of one picture of a design: an output from the row, or the base from its job.
async fn picture_url(dashboard: &Dashboard, design: &str, asset: &str) -> Result<String, String> {
    let id = crate::job::DesignId::parse(design).map_err(|rule| rule.to_string())?;
    let row = dashboard
        .designs
        .get(&id)
        .await
        .map_err(|error| error.to_string())?
        .ok_or("no such design")?;
    let metadata = |key: &str| {
        row.metadata
            .as_ref()
            .and_then(|metadata| metadata.get(key))
            .and_then(serde_json::Value::as_str)
            .map(str::to_owned)
    };
    let url = match asset {
        "composite" => row.composite_texture_url.clone(),
        "preview" => row.preview_url.clone(),
        "high-res" => row.high_res_url.clone(),
        "normal" => metadata("normalMapUrl"),
        "roughness" => metadata("roughnessMapUrl"),
        "base" => {
            let job = metadata("jobId").ok_or("the row names no job")?;
            dashboard
                .operations
                .job_inputs(&job)
                .await?
                .map(|inputs| inputs.base_texture_url)
        }
        _ => return Err("unknown asset".into()),
    };
    url.ok_or_else(|| format!("no {asset} URL"))
}

async fn image(
    State(dashboard): Shared,
    headers: HeaderMap,
    Path((design, asset)): Path<(String, String)>,
    Query(query): Query<PageQuery>,
) -> Response {
    if caller(&dashboard, &headers).is_none() {
        return unauthorized(None);
    }
    let side = if query.size.as_deref() == Some("large") {
        1024
    } else {
        256
    };
    let picture = match picture_url(&dashboard, &design, &asset).await {
        Ok(url) => dashboard.images.thumbnail(&url, side).await,
        Err(why) => Picture::Unavailable(why),
    };
    let (content_type, body) = match picture {
        Picture::Png(png) => ("image/png", png),
        Picture::Unavailable(why) => {
            tracing::debug!("Dashboard picture {asset} of {design} unavailable: {why}");
            ("image/svg+xml", bytes::Bytes::from_static(PLACEHOLDER_SVG.as_bytes()))
        }
    };
    let mut response = body.into_response();
    let headers = response.headers_mut();
    secure(headers);
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("private, max-age=300"));
    response
}
