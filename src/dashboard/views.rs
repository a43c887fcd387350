//! The dashboard's HTML, written directly: every page is complete without script (it refreshes
//! itself with a `<meta>` tag), its style is inline and its pictures come from this server. Every
//! value from Redis or the database goes through `escape`.

use std::fmt::Write as _;

use super::{FailedPage, HEARTBEAT_INTERVAL, Heartbeat, QueueSummary, TenantSlots};
use crate::store::{DesignRow, TenantCost};
use crate::tenancy::TenantLimits;

/// What every page's frame needs.
pub struct Context {
    /// The navigation entry to highlight.
    pub current: &'static str,
    /// The caller's CSRF token, carried by every form (logout too, even read-only).
    pub csrf: String,
    pub read_only: bool,
    /// Whether the caller has a session (so there is something to log out of).
    pub session: bool,
}

impl Context {
    /// The CSRF token for action forms; `None` when read-only (no action is shown).
    fn actions(&self) -> Option<&str> {
        (!self.read_only).then_some(self.csrf.as_str())
    }
}

/// p50/p95 job duration over the newest completed rows.
pub struct Durations {
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub sample: usize,
}

/// What the tenants page shows.
pub struct TenantData<'a> {
    pub slots: Result<Vec<TenantSlots>, String>,
    pub today: Result<Vec<TenantCost>, String>,
    pub month: Result<Vec<TenantCost>, String>,
    pub limits: &'a TenantLimits,
}

/// HTML-escapes text for element content and quoted attribute values.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A path segment or query value, percent-encoded.
fn encode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

const STYLE: &str = "body{font:14px/1.45 system-ui,sans-serif;margin:0;color:#111827;background:#f9fafb}\
header{background:#111827;color:#f9fafb;padding:10px 20px;display:flex;gap:18px;align-items:center}\
header a{color:#d1d5db;text-decoration:none}header a.current{color:#fff;font-weight:600}\
header form{margin-left:auto}main{padding:20px}h1{font-size:20px;margin:0 0 14px}h2{font-size:16px;margin:22px 0 8px}\
table{border-collapse:collapse;background:#fff}td,th{border:1px solid #e5e7eb;padding:5px 9px;text-align:left}\
td.n{text-align:right;font-variant-numeric:tabular-nums}.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(280px,1fr));gap:14px}\
figure.render{margin:0;background:#fff;border:1px solid #e5e7eb;padding:8px}figure.render img{width:128px;height:128px;object-fit:cover;background:#e5e7eb}\
figcaption{font-size:12px;color:#4b5563}.pair{display:flex;gap:6px}.error{color:#b91c1c}.gone{color:#9ca3af}\
.open{color:#b91c1c;font-weight:600}.half_open{color:#b45309}button{cursor:pointer}.outputs img{max-width:300px;background:#e5e7eb}\
.login{max-width:340px;margin:80px auto;background:#fff;padding:24px;border:1px solid #e5e7eb}";

fn frame(ctx: Option<&Context>, title: &str, refresh: bool, body: &str) -> String {
    let mut html = String::with_capacity(body.len() + 2048);
    let _ = write!(
        html,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{} · design-render</title>\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">{}<style>{STYLE}</style></head><body>",
        escape(title),
        if refresh {
            "<meta http-equiv=\"refresh\" content=\"10\">"
        } else {
            ""
        }
    );
    if let Some(ctx) = ctx {
        html.push_str("<header><strong>design-render</strong>");
        for (key, label, href) in [
            ("overview", "Overview", "/dashboard"),
            ("renders", "Recent renders", "/dashboard/renders"),
            ("failed", "Failed", "/dashboard/failed"),
            ("tenants", "Tenants", "/dashboard/tenants"),
            ("workers", "Providers and workers", "/dashboard/workers"),
        ] {
            let class = if ctx.current == key { " class=\"current\"" } else { "" };
            let _ = write!(html, "<a href=\"{href}\"{class}>{label}</a>");
        }
        if ctx.read_only {
            html.push_str("<span>read-only</span>");
        }
        if ctx.session {
            let _ = write!(
                html,
                "<form method=\"post\" action=\"/dashboard/logout\"><input type=\"hidden\" name=\"csrf\" value=\"{}\">\
                 <button type=\"submit\">Log out</button></form>",
                escape(&ctx.csrf)
            );
        }
        html.push_str("</header>");
    }
    let _ = write!(html, "<main>{body}</main></body></html>");
    html
}

/// The login form (also the body of every 401).
pub fn login(problem: Option<&str>) -> String {
    let problem = problem
        .map(|text| format!("<p class=\"error\">{}</p>", escape(text)))
        .unwrap_or_default();
    frame(
        None,
        "Log in",
        false,
        &format!(
            "<div class=\"login\"><h1>design-render dashboard</h1>{problem}\
             <form id=\"login\" method=\"post\" action=\"/dashboard/login\">\
             <label>Dashboard token<br><input name=\"token\" type=\"password\" autocomplete=\"current-password\" required autofocus></label>\
             <p><button type=\"submit\">Log in</button></p></form></div>"
        ),
    )
}

/// A page with one message.
pub fn message(title: &str, text: &str) -> String {
    frame(
        None,
        title,
        false,
        &format!(
            "<h1>{}</h1><p>{}</p><p><a href=\"/dashboard\">Back to the dashboard</a></p>",
            escape(title),
            escape(text)
        ),
    )
}

fn failure(error: &str) -> String {
    format!("<p class=\"error\">Unavailable: {}</p>", escape(error))
}

/// Bars of jobs per minute, oldest left, completed above the axis and failed below.
fn chart(queue: &QueueSummary) -> String {
    const WIDTH: usize = 600;
    const HEIGHT: u64 = 60;
    let minutes = queue
        .completed_per_minute
        .len()
        .max(queue.failed_per_minute.len())
        .max(1);
    let peak = queue
        .completed_per_minute
        .iter()
        .chain(&queue.failed_per_minute)
        .copied()
        .max()
        .unwrap_or(0)
        .max(1);
    let bar = WIDTH / minutes;
    let mut svg = format!(
        "<svg class=\"chart\" width=\"{WIDTH}\" height=\"{}\" viewBox=\"0 0 {WIDTH} {}\" role=\"img\" aria-label=\"jobs per minute, last hour\">\
         <line x1=\"0\" y1=\"{HEIGHT}\" x2=\"{WIDTH}\" y2=\"{HEIGHT}\" stroke=\"#9ca3af\"/>",
        2 * HEIGHT + 2,
        2 * HEIGHT + 2
    );
    for (index, count) in queue.completed_per_minute.iter().enumerate() {
        let height = count * HEIGHT / peak;
        let _ = write!(
            svg,
            "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{height}\" fill=\"#10b981\"><title>{count} completed</title></rect>",
            index * bar,
            HEIGHT - height,
            bar.saturating_sub(1).max(1)
        );
    }
    for (index, count) in queue.failed_per_minute.iter().enumerate() {
        let height = count * HEIGHT / peak;
        let _ = write!(
            svg,
            "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{height}\" fill=\"#ef4444\"><title>{count} failed</title></rect>",
            index * bar,
            HEIGHT + 1,
            bar.saturating_sub(1).max(1)
        );
    }
    svg.push_str("</svg>");
    svg
}

fn milliseconds(value: Option<f64>) -> String {
    value.map_or_else(|| "–".to_owned(), |ms| format!("{:.0} ms", ms))
}

pub fn overview(
    ctx: &Context,
    queues: Result<Vec<QueueSummary>, String>,
    codes: Result<Vec<(String, u64)>, String>,
    rows_error: Option<String>,
    durations: &Durations,
) -> String {
    let mut body = String::from("<h1>Overview</h1>");
    match &queues {
        Ok(queues) => {
            body.push_str("<table id=\"counts\"><tr><th>queue</th>");
            let states = queues.first().map(|queue| queue.counts.clone()).unwrap_or_default();
            for (state, _) in &states {
                let _ = write!(body, "<th>{state}</th>");
            }
            body.push_str("</tr>");
            for (index, queue) in queues.iter().enumerate() {
                let key = if index == 0 { "render" } else { "webhooks" };
                let _ = write!(body, "<tr><th>{}</th>", escape(&queue.name));
                for (state, count) in &queue.counts {
                    let _ = write!(
                        body,
                        "<td class=\"n\" data-queue=\"{key}\" data-state=\"{state}\">{count}</td>"
                    );
                }
                body.push_str("</tr>");
            }
            body.push_str("</table>");
            if let Some(render) = queues.first() {
                let completed: u64 = render.completed_per_minute.iter().sum();
                let failed: u64 = render.failed_per_minute.iter().sum();
                let _ = write!(
                    body,
                    "<h2>Jobs per minute, last hour</h2><p>{completed} completed, {failed} failed</p>{}",
                    chart(render)
                );
            }
        }
        Err(error) => body.push_str(&failure(error)),
    }
    let _ = write!(
        body,
        "<h2>Job duration</h2><p>p50 <strong id=\"p50\">{}</strong>, p95 <strong id=\"p95\">{}</strong> \
         over the newest {} completed designs</p>",
        milliseconds(durations.p50_ms),
        milliseconds(durations.p95_ms),
        durations.sample
    );
    if let Some(error) = rows_error {
        body.push_str(&failure(&error));
    }
    body.push_str("<h2>Failures by error code</h2>");
    body.push_str(&codes_table(ctx, &codes));
    frame(Some(ctx), "Overview", true, &body)
}

fn codes_table(ctx: &Context, codes: &Result<Vec<(String, u64)>, String>) -> String {
    let codes = match codes {
        Ok(codes) if codes.is_empty() => return "<p>No failed jobs.</p>".into(),
        Ok(codes) => codes,
        Err(error) => return failure(error),
    };
    let mut html = format!(
        "<table id=\"codes\"><tr><th>code</th><th>jobs (newest {})</th>{}</tr>",
        super::FAILED_SCAN,
        if ctx.actions().is_some() { "<th></th>" } else { "" }
    );
    for (code, count) in codes {
        let _ = write!(
            html,
            "<tr data-code=\"{0}\"><td>{0}</td><td class=\"n\">{count}</td>",
            escape(code)
        );
        if let Some(csrf) = ctx.actions() {
            let _ = write!(
                html,
                "<td><form class=\"retry-code\" method=\"post\" action=\"/dashboard/failed/retry-code\">\
                 <input type=\"hidden\" name=\"csrf\" value=\"{}\"><input type=\"hidden\" name=\"code\" value=\"{}\">\
                 <button type=\"submit\">Retry all</button></form></td>",
                escape(csrf),
                escape(code)
            );
        }
        html.push_str("</tr>");
    }
    html.push_str("</table>");
    html
}

fn pager(base: &str, page: usize, shown: usize, page_size: usize) -> String {
    let mut html = String::from("<p class=\"pager\">");
    if page > 1 {
        let _ = write!(html, "<a href=\"{base}?page={}\">← newer</a> ", page - 1);
    }
    let _ = write!(html, "page {page}");
    if shown == page_size {
        let _ = write!(html, " <a href=\"{base}?page={}\">older →</a>", page + 1);
    }
    html.push_str("</p>");
    html
}

fn cents(cents: i64) -> String {
    format!("${}.{:02}", cents / 100, cents % 100)
}

fn metadata_str<'a>(row: &'a DesignRow, pointer: &str) -> Option<&'a str> {
    row.metadata.as_ref()?.pointer(pointer)?.as_str()
}

fn metadata_f64(row: &DesignRow, pointer: &str) -> Option<f64> {
    row.metadata.as_ref()?.pointer(pointer)?.as_f64()
}

pub fn renders(ctx: &Context, rows: Result<Vec<DesignRow>, String>, page: usize, page_size: usize) -> String {
    let mut body = String::from("<h1>Recent renders</h1>");
    match rows {
        Ok(rows) if rows.is_empty() && page == 1 => body.push_str("<p>No completed design yet.</p>"),
        Ok(rows) => {
            body.push_str("<div class=\"grid\">");
            for row in &rows {
                let id = encode(&row.id);
                let _ = write!(
                    body,
                    "<figure class=\"render\" data-design=\"{}\"><a href=\"/dashboard/renders/{id}\" class=\"pair\">\
                     <img class=\"thumb base\" src=\"/dashboard/images/{id}/base\" alt=\"base\" width=\"128\" height=\"128\">\
                     <img class=\"thumb result\" src=\"/dashboard/images/{id}/preview\" alt=\"result\" width=\"128\" height=\"128\"></a>\
                     <figcaption><strong>{}</strong><br>{} · {} · {}</figcaption></figure>",
                    escape(&row.id),
                    escape(&row.id),
                    escape(metadata_str(row, "/provider").unwrap_or("?")),
                    milliseconds(metadata_f64(row, "/timings/totalMs")),
                    cents(i64::from(row.cost_cents)),
                );
            }
            body.push_str("</div>");
            body.push_str(&pager("/dashboard/renders", page, rows.len(), page_size));
        }
        Err(error) => body.push_str(&failure(&error)),
    }
    frame(Some(ctx), "Recent renders", false, &body)
}

pub fn render_detail(ctx: &Context, row: &DesignRow) -> String {
    let id = encode(&row.id);
    let mut body = format!(
        "<h1>Design {}</h1><p>status {} · tenant {} · provider {} · {} · {} tokens</p><div class=\"outputs\">",
        escape(&row.id),
        row.status.as_str(),
        escape(row.tenant_id.as_deref().unwrap_or("–")),
        escape(metadata_str(row, "/provider").unwrap_or("?")),
        cents(i64::from(row.cost_cents)),
        row.cost_tokens
    );
    for (asset, label) in [
        ("base", "base"),
        ("composite", "composite"),
        ("high-res", "high-res"),
        ("preview", "preview"),
        ("normal", "normal map"),
        ("roughness", "roughness map"),
    ] {
        let present = match asset {
            "normal" => metadata_str(row, "/normalMapUrl").is_some(),
            "roughness" => metadata_str(row, "/roughnessMapUrl").is_some(),
            _ => true,
        };
        if present {
            let _ = write!(
                body,
                "<figure><img class=\"output\" src=\"/dashboard/images/{id}/{asset}?size=large\" alt=\"{label}\"><figcaption>{label}</figcaption></figure>"
            );
        }
    }
    body.push_str("</div><h2>Timings</h2><table>");
    if let Some(timings) = row
        .metadata
        .as_ref()
        .and_then(|m| m.get("timings"))
        .and_then(|t| t.as_object())
    {
        for (step, value) in timings {
            let _ = write!(
                body,
                "<tr><th>{}</th><td class=\"n\">{}</td></tr>",
                escape(step),
                escape(&value.to_string())
            );
        }
    }
    body.push_str("</table><h2>Provider attempts</h2>");
    let attempts = row
        .metadata
        .as_ref()
        .and_then(|m| m.get("providerAttempts"))
        .map(|attempts| serde_json::to_string_pretty(attempts).unwrap_or_default())
        .unwrap_or_else(|| "–".into());
    let metadata = row
        .metadata
        .as_ref()
        .map(|metadata| serde_json::to_string_pretty(metadata).unwrap_or_default())
        .unwrap_or_default();
    let _ = write!(
        body,
        "<pre>{}</pre><h2>Metadata</h2><pre>{}</pre>",
        escape(&attempts),
        escape(&metadata)
    );
    frame(Some(ctx), "Design", false, &body)
}

fn when(ms: Option<u64>) -> String {
    ms.and_then(|ms| chrono::DateTime::from_timestamp_millis(i64::try_from(ms).ok()?))
        .map_or_else(|| "–".to_owned(), |at| at.format("%Y-%m-%d %H:%M:%S UTC").to_string())
}

pub fn failed(
    ctx: &Context,
    jobs: Result<FailedPage, String>,
    codes: Result<Vec<(String, u64)>, String>,
    page: usize,
    page_size: usize,
) -> String {
    let mut body = String::from("<h1>Failed jobs</h1>");
    body.push_str(&codes_table(ctx, &codes));
    match jobs {
        Ok(page_of) => {
            let _ = write!(body, "<h2>{} failed, newest first</h2>", page_of.total);
            body.push_str(
                "<table id=\"failed\"><tr><th>job</th><th>design</th><th>tenant</th><th>code</th><th>attempts</th><th>failed at</th><th>reason</th>",
            );
            if ctx.actions().is_some() {
                body.push_str("<th></th>");
            }
            body.push_str("</tr>");
            for job in &page_of.jobs {
                let _ = write!(
                    body,
                    "<tr data-job=\"{}\"><td>{}</td><td><a href=\"/dashboard/renders/{}\">{}</a></td><td>{}</td><td>{}</td><td class=\"n\">{}</td><td>{}</td><td>{}</td>",
                    escape(&job.id),
                    escape(&job.id),
                    encode(&job.design_id),
                    escape(&job.design_id),
                    escape(&job.tenant_id),
                    escape(&job.code),
                    job.attempts,
                    when(job.failed_at_ms),
                    escape(&job.reason)
                );
                if let Some(csrf) = ctx.actions() {
                    let _ = write!(
                        body,
                        "<td><form class=\"retry\" method=\"post\" action=\"/dashboard/failed/{}/retry\">\
                         <input type=\"hidden\" name=\"csrf\" value=\"{}\"><button type=\"submit\">Retry</button></form></td>",
                        encode(&job.id),
                        escape(csrf)
                    );
                }
                body.push_str("</tr>");
            }
            body.push_str("</table>");
            body.push_str(&pager("/dashboard/failed", page, page_of.jobs.len(), page_size));
        }
        Err(error) => body.push_str(&failure(&error)),
    }
    frame(Some(ctx), "Failed", true, &body)
}

pub fn tenants(ctx: &Context, data: TenantData<'_>) -> String {
    let mut body = String::from("<h1>Tenants</h1>");
    let (slots, today, month) = match (&data.slots, &data.today, &data.month) {
        (Ok(slots), Ok(today), Ok(month)) => (slots, today, month),
        (Err(error), _, _) | (_, Err(error), _) | (_, _, Err(error)) => {
            body.push_str(&failure(error));
            return frame(Some(ctx), "Tenants", true, &body);
        }
    };
    body.push_str(
        "<p>Tenants with designs this month or a saturated delay, most expensive first.</p>\
         <table id=\"tenants\"><tr><th>tenant</th><th>active slots / limit</th><th>saturated delays</th>\
         <th>cost today</th><th>cost this month</th><th>designs this month</th></tr>",
    );
    let mut names: Vec<&str> = month.iter().map(|cost| cost.tenant_id.as_str()).collect();
    for slot in slots {
        if !names.contains(&slot.tenant_id.as_str()) {
            names.push(&slot.tenant_id);
        }
    }
    for name in names {
        let slot = slots.iter().find(|slot| slot.tenant_id == name);
        let limit = crate::job::TenantId::parse(name).map_or(data.limits.default, |id| data.limits.limit_for(&id));
        let today_cost = today.iter().find(|cost| cost.tenant_id == name);
        let month_cost = month.iter().find(|cost| cost.tenant_id == name);
        let _ = write!(
            body,
            "<tr data-tenant=\"{}\"><td>{}</td><td class=\"n\">{} / {limit}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
            escape(name),
            escape(name),
            slot.map_or(0, |slot| slot.active),
            slot.map_or(0, |slot| slot.saturated),
            cents(today_cost.map_or(0, |cost| cost.cost_cents)),
            cents(month_cost.map_or(0, |cost| cost.cost_cents)),
            month_cost.map_or(0, |cost| cost.designs),
        );
    }
    body.push_str("</table>");
    frame(Some(ctx), "Tenants", true, &body)
}

pub fn workers(ctx: &Context, workers: Result<Vec<Heartbeat>, String>, now_ms: u64) -> String {
    let mut body = String::from("<h1>Providers and workers</h1>");
    let workers = match workers {
        Ok(workers) if workers.is_empty() => {
            body.push_str("<p>No worker has reported in the last hour.</p>");
            return frame(Some(ctx), "Workers", true, &body);
        }
        Ok(workers) => workers,
        Err(error) => {
            body.push_str(&failure(&error));
            return frame(Some(ctx), "Workers", true, &body);
        }
    };
    let gone_after = 3 * u64::try_from(HEARTBEAT_INTERVAL.as_millis()).unwrap_or(u64::MAX);
    body.push_str(
        "<table id=\"workers\"><tr><th>worker</th><th>state</th><th>version</th><th>concurrency</th><th>in flight</th>\
         <th>breakers</th><th>last seen</th></tr>",
    );
    for worker in &workers {
        let gone = now_ms.saturating_sub(worker.last_seen_ms) > gone_after;
        let breakers: Vec<String> = worker
            .breakers
            .iter()
            .map(|(provider, state)| format!("<span class=\"{0}\">{1}: {0}</span>", escape(state), escape(provider)))
            .collect();
        let _ = write!(
            body,
            "<tr data-worker=\"{}\"{}><td>{}</td><td>{}</td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td>{}</td><td>{}</td></tr>",
            escape(&worker.name),
            if gone { " class=\"gone\"" } else { "" },
            escape(&worker.name),
            if gone { "gone" } else { "live" },
            escape(&worker.version),
            worker.concurrency,
            worker.in_flight,
            if breakers.is_empty() {
                "–".to_owned()
            } else {
                breakers.join(", ")
            },
            when(Some(worker.last_seen_ms)),
        );
    }
    body.push_str("</table>");
    frame(Some(ctx), "Workers", true, &body)
}
