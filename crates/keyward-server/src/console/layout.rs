//! The page layout every console page shares: the header and navigation, a small embedded
//! style sheet, the one small script (served from this origin; every page works without it)
//! and the security headers of an HTML answer.

use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, REFERRER_POLICY, RETRY_AFTER};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use maud::{html, Markup, PreEscaped, DOCTYPE};

use super::session::LOGOUT_PATH;

const STYLE: &str = r#"
*{box-sizing:border-box}
body{margin:0;font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;background:#f6f7f9;color:#1d2330;line-height:1.5}
header{display:flex;align-items:center;justify-content:space-between;padding:.75rem 1.5rem;background:#1d2330;color:#fff}
header .brand{font-weight:700;font-size:1.15rem;letter-spacing:.02em}
header form{margin:0}
header button{background:transparent;color:#fff;border:1px solid #6b7385;padding:.3rem .8rem}
main{max-width:34rem;margin:2.5rem auto;padding:0 1rem}
.card{background:#fff;border:1px solid #dfe2e8;border-radius:8px;padding:1.5rem 1.75rem;box-shadow:0 1px 2px rgba(0,0,0,.04)}
h1{font-size:1.35rem;margin:0 0 1rem}
label{display:block;font-weight:600;margin:.75rem 0 .25rem}
input[type=text],input[type=email],input[type=password]{width:100%;padding:.55rem .7rem;font-size:1rem;border:1px solid #c3c8d2;border-radius:6px}
input.code{font-family:ui-monospace,Menlo,Consolas,monospace;letter-spacing:.15em;text-transform:uppercase}
button{font-size:1rem;padding:.5rem 1.1rem;border-radius:6px;border:1px solid #2f5bd3;background:#2f5bd3;color:#fff;cursor:pointer}
button.secondary{background:#fff;color:#1d2330;border-color:#c3c8d2}
.actions{display:flex;gap:.75rem;margin-top:1.25rem}
.row-actions{white-space:nowrap}.row-actions form{display:inline;margin:0}
.notice{padding:.7rem .9rem;border-radius:6px;margin:0 0 1rem}
.error{background:#fdecec;border:1px solid #f2b8b8;color:#8a1c1c}
.success{background:#e9f7ef;border:1px solid #a9dcbc;color:#1b5e36}
code,.code-shown{font-family:ui-monospace,Menlo,Consolas,monospace}
.code-shown{font-size:1.4rem;letter-spacing:.15em}
.muted{color:#5c6477;font-size:.9rem}
nav{display:flex;gap:1.25rem;flex-wrap:wrap}
nav a{color:#c9cfdb;text-decoration:none;padding:.2rem 0;border-bottom:2px solid transparent}
nav a:hover,nav a[aria-current=page]{color:#fff;border-bottom-color:#7fa2ff}
a:focus-visible,button:focus-visible,input:focus-visible,select:focus-visible,.day:focus-visible{outline:3px solid #7fa2ff;outline-offset:2px}
main.wide{max-width:72rem}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(10rem,1fr));gap:1rem;margin:0 0 1.25rem}
.stat{border:1px solid #dfe2e8;border-radius:8px;padding:.8rem 1rem;background:#fbfbfd}
.stat .value{display:block;font-size:1.6rem;font-weight:700}
.stat .name{color:#5c6477;font-size:.85rem;text-transform:uppercase;letter-spacing:.05em}
.toolbar{display:flex;flex-wrap:wrap;align-items:end;justify-content:space-between;gap:1rem;margin-bottom:1rem}
.toolbar h1{margin:0}
.toolbar form{display:flex;gap:.5rem;align-items:end}
.toolbar label{margin:0 0 .25rem}
select{padding:.45rem .6rem;font-size:1rem;border:1px solid #c3c8d2;border-radius:6px;background:#fff}
svg.chart{width:100%;min-width:36rem;height:auto;display:block}
svg.chart .grid{stroke:#e4e7ed;stroke-width:1}
svg.chart .zero{stroke:#c3c8d2;stroke-width:2}
svg.chart .axis{font-size:11px;fill:#5c6477}
svg.chart .day:hover .hover,svg.chart .day:focus .hover{fill:#eef2fb}
.legend{display:flex;gap:1.25rem;flex-wrap:wrap;margin:.75rem 0 0;padding:0;list-style:none;font-size:.9rem}
.swatch{display:inline-block;width:.8rem;height:.8rem;border-radius:2px;margin-right:.4rem;vertical-align:-.05rem}
.empty{text-align:center;padding:2.5rem 1rem;color:#5c6477}
a.button{display:inline-block;font-size:1rem;padding:.5rem 1.1rem;border-radius:6px;border:1px solid #2f5bd3;background:#2f5bd3;color:#fff;text-decoration:none}
a.button.secondary,button.secondary{background:#fff;color:#1d2330;border-color:#c3c8d2}
button.danger{background:#b42318;border-color:#b42318}
a.danger{color:#b42318;font-weight:600}
.table-wrap,.chart-wrap{overflow-x:auto;position:relative}
table{width:100%;border-collapse:collapse;font-size:.95rem}
th,td{text-align:left;padding:.55rem .6rem;border-bottom:1px solid #e4e7ed;white-space:nowrap}
th{font-size:.8rem;text-transform:uppercase;letter-spacing:.05em;color:#5c6477}
.status{font-size:.8rem;padding:.1rem .5rem;border-radius:999px;background:#e9f7ef;color:#1b5e36}
.status.revoked{background:#fdecec;color:#8a1c1c}
.status.expired{background:#f1f2f5;color:#4a5163}
.backdrop{position:fixed;inset:0;background:rgba(20,24,33,.45)}
dialog{position:fixed;top:8vh;margin:0 auto;max-width:32rem;width:calc(100% - 2rem);border:0;border-radius:10px;padding:1.5rem 1.75rem;box-shadow:0 10px 40px rgba(0,0,0,.25);z-index:10;max-height:84vh;overflow:auto}
dialog h2{margin:0 0 .75rem;font-size:1.2rem}
fieldset{border:0;padding:0;margin:.75rem 0 0}
legend{font-weight:600;margin-bottom:.25rem;padding:0}
label.choice{font-weight:400;margin:.2rem 0}
.field-error{color:#8a1c1c;margin:.25rem 0 0;font-size:.9rem}
input[aria-invalid=true]{border-color:#b42318}
.secret{display:flex;gap:.5rem;align-items:center;background:#f6f7f9;border:1px solid #dfe2e8;border-radius:6px;padding:.6rem .7rem;margin:1rem 0}
.secret code{flex:1;word-break:break-all;font-size:.95rem}
section{margin-top:1.75rem}
section h2{font-size:1.1rem;margin:0 0 .5rem}
dl.facts{display:grid;grid-template-columns:max-content 1fr;gap:.35rem 1.25rem;margin:0}
dl.facts dt{color:#5c6477}
dl.facts dd{margin:0;overflow-wrap:anywhere}
td form{margin:0}
td form button{font-size:.85rem;padding:.25rem .7rem}
.narrow{max-width:24rem}
.visually-hidden{position:absolute;width:1px;height:1px;overflow:hidden;clip:rect(0 0 0 0);white-space:nowrap}
@media (max-width:40rem){dl.facts{grid-template-columns:1fr}dl.facts dd{margin-bottom:.4rem}header{flex-wrap:wrap;gap:.5rem;padding:.75rem 1rem}main{margin:1.25rem auto}.card{padding:1.1rem 1rem}th,td{padding:.45rem .4rem}}
"#;

/// The console's one script: server-rendered dialogs become modal (focus kept inside, Escape
/// leaves), and the Copy button of the show-once dialog. Served from this origin
/// (`script-src 'self'`), so the CSP still forbids inline script; without it every page still
/// works, and the key can be selected and copied by hand.
const SCRIPT: &str = r#"// A dialog the server rendered open becomes modal: focus stays in it, and Escape leaves
// through its Cancel or Done link.
document.querySelectorAll("dialog[open]").forEach(function (dialog) {
  if (!dialog.showModal) return;
  dialog.close();
  dialog.showModal();
  dialog.addEventListener("cancel", function (event) {
    var away = dialog.querySelector("a.button");
    if (away) {
      event.preventDefault();
      window.location.href = away.href;
    }
  });
});
document.addEventListener("click", function (event) {
  var button = event.target.closest("[data-copy]");
  if (!button) return;
  var source = document.getElementById(button.getAttribute("data-copy"));
  if (!source || !navigator.clipboard) return;
  navigator.clipboard.writeText(source.textContent.trim()).then(function () {
    button.textContent = "Copied";
  });
});
"#;

/// `GET /console/assets/console.js`.
pub async fn script() -> Response {
    let mut response = SCRIPT.into_response();
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/javascript; charset=utf-8"),
    );
    headers.insert(
        CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    headers.insert(
        HeaderName::from_static("x-content-type-options"),
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// The logout button of the header: present when signed in, with its CSRF token.
pub struct SignedIn<'a> {
    pub logout_csrf: &'a str,
}

/// The console's sections, in the header of every signed-in page.
const SECTIONS: [(&str, &str); 4] = [
    ("/console/api-keys", "API keys"),
    ("/console/usage", "Usage"),
    ("/console/device", "Device"),
    ("/console/account", "Account"),
];

/// A whole page: `title`, the header (with a logout button when signed in) and `content`.
pub fn page(title: &str, signed_in: Option<SignedIn<'_>>, content: Markup) -> Markup {
    shell(title, signed_in, false, None, content)
}

/// A narrow page of a console section, with `current` marked in the navigation.
pub fn section_page(
    title: &str,
    signed_in: SignedIn<'_>,
    current: &str,
    content: Markup,
) -> Markup {
    shell(title, Some(signed_in), false, Some(current), content)
}

/// A page as wide as a table or chart needs, with `current` marked in the navigation.
pub fn wide_page(title: &str, signed_in: SignedIn<'_>, current: &str, content: Markup) -> Markup {
    shell(title, Some(signed_in), true, Some(current), content)
}

fn shell(
    title: &str,
    signed_in: Option<SignedIn<'_>>,
    wide: bool,
    current: Option<&str>,
    content: Markup,
) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="robots" content="noindex";
                title { (title) " · Keyward" }
                style { (PreEscaped(STYLE)) }
                script src="/console/assets/console.js" defer {}
            }
            body {
                header {
                    span.brand { "Keyward" }
                    @if signed_in.is_some() {
                        nav aria-label="Console" {
                            @for (path, name) in SECTIONS {
                                a href=(path) aria-current=[(current == Some(path)).then_some("page")] { (name) }
                            }
                        }
                    }
                    @if let Some(signed_in) = signed_in {
                        form method="post" action=(LOGOUT_PATH) {
                            input type="hidden" name="csrf" value=(signed_in.logout_csrf);
                            button type="submit" { "Sign out" }
                        }
                    }
                }
                main.wide[wide] {
                    div.card { (content) }
                }
            }
        }
    }
}

/// An HTML answer with the console's headers: never cached (pages carry CSRF tokens and
/// codes), never framed (an Approve button under a foreign page would be clickjacking), no
/// script, forms only to this origin, and no referrer to other sites (the URL may hold a user
/// code). Not `no-referrer`: under it Chrome sends `Origin: null` with a form POST, which the
/// origin check must refuse, so no form would work.
pub fn html(status: StatusCode, markup: Markup) -> Response {
    let mut response = (status, markup.into_string()).into_response();
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    headers.insert(
        HeaderName::from_static("x-frame-options"),
        HeaderValue::from_static("DENY"),
    );
    headers.insert(
        HeaderName::from_static("x-content-type-options"),
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        HeaderName::from_static("content-security-policy"),
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    response
}

/// A page that only says what went wrong, with a link onwards.
pub fn message_page(
    status: StatusCode,
    title: &str,
    message: &str,
    link: (&str, &str),
) -> Response {
    html(
        status,
        page(
            title,
            None,
            html! {
                h1 { (title) }
                p.notice.error { (message) }
                p { a href=(link.0) { (link.1) } }
            },
        ),
    )
}

/// The 404 page of every unknown path under `/console` (SPEC §3: HTML, not problem+json).
pub fn not_found() -> Response {
    message_page(
        StatusCode::NOT_FOUND,
        "Page not found",
        "There is no console page at this address.",
        ("/console", "Go to the console"),
    )
}

/// 403 for a form whose CSRF token or origin is wrong: nothing was done.
pub fn forbidden() -> Response {
    message_page(
        StatusCode::FORBIDDEN,
        "Request refused",
        "This form was not sent from a Keyward console page, or it has expired. Nothing was changed; reload the page and try again.",
        ("/console", "Back to the console"),
    )
}

/// 400 for a form body that cannot be read.
pub fn bad_form() -> Response {
    message_page(
        StatusCode::BAD_REQUEST,
        "Bad request",
        "The form could not be read. Reload the page and try again.",
        ("/console", "Back to the console"),
    )
}

/// 5xx: the database is down (503) or something failed on our side (500). The cause is logged
/// inside the request span, so the line carries the request id.
pub fn server_error(error: keyward_core::CoreError) -> Response {
    match error {
        keyward_core::CoreError::RateLimited {
            retry_after_seconds,
        } => with_retry_after(
            message_page(
                StatusCode::TOO_MANY_REQUESTS,
                "Too many attempts",
                "Too many attempts from here. Wait a little, then try again.",
                ("/console", "Back to the console"),
            ),
            retry_after_seconds,
        ),
        keyward_core::CoreError::Overloaded {
            retry_after_seconds,
        } => with_retry_after(
            message_page(
                StatusCode::SERVICE_UNAVAILABLE,
                "Service busy",
                "The server is too busy right now. Try again in a moment.",
                ("/console", "Try again"),
            ),
            retry_after_seconds,
        ),
        keyward_core::CoreError::Unavailable(cause) => {
            tracing::error!(%cause, "console request failed: database unavailable");
            message_page(
                StatusCode::SERVICE_UNAVAILABLE,
                "Service unavailable",
                "The database is unreachable. Try again shortly.",
                ("/console", "Try again"),
            )
        }
        other => {
            tracing::error!(cause = %other, "console request failed");
            message_page(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Something went wrong",
                "Something went wrong on our side. Try again; if it persists, tell your administrator the time it happened.",
                ("/console", "Back to the console"),
            )
        }
    }
}

/// Adds `Retry-After` to a 429 answer.
pub fn with_retry_after(mut response: Response, seconds: u64) -> Response {
    response
        .headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from(seconds));
    response
}
