//! One-off requests for set-up and checks (readiness, registration, probes), each on its own
//! connection with a timeout. The measured traffic goes through [`crate::load`] instead.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

const TIMEOUT: Duration = Duration::from_secs(10);

pub struct Answer {
    pub status: StatusCode,
    pub body: Bytes,
}

impl Answer {
    pub fn json(&self) -> anyhow::Result<serde_json::Value> {
        serde_json::from_slice(&self.body).with_context(|| {
            format!(
                "expected a JSON body, got: {}",
                crate::load::snippet(&self.body)
            )
        })
    }

    /// The body as text, shortened, for error messages.
    pub fn text(&self) -> String {
        crate::load::snippet(&self.body)
    }
}

/// A request builder for set-up calls.
pub struct Call {
    addr: SocketAddr,
    method: Method,
    path: String,
    bearer: Option<String>,
    api_key_header: Option<String>,
    json: Option<serde_json::Value>,
}

impl Call {
    pub fn get(addr: SocketAddr, path: &str) -> Self {
        Self::new(addr, Method::GET, path)
    }

    pub fn post(addr: SocketAddr, path: &str, json: serde_json::Value) -> Self {
        let mut call = Self::new(addr, Method::POST, path);
        call.json = Some(json);
        call
    }

    pub fn delete(addr: SocketAddr, path: &str) -> Self {
        Self::new(addr, Method::DELETE, path)
    }

    fn new(addr: SocketAddr, method: Method, path: &str) -> Self {
        Self {
            addr,
            method,
            path: path.to_owned(),
            bearer: None,
            api_key_header: None,
            json: None,
        }
    }

    pub fn bearer(mut self, token: &str) -> Self {
        self.bearer = Some(token.to_owned());
        self
    }

    pub fn api_key_header(mut self, key: &str) -> Self {
        self.api_key_header = Some(key.to_owned());
        self
    }

    /// Sends the request; `Err` only when no HTTP answer came back.
    pub async fn send(self) -> anyhow::Result<Answer> {
        let what = format!("{} http://{}{}", self.method, self.addr, self.path);
        tokio::time::timeout(TIMEOUT, self.send_inner())
            .await
            .map_err(|_| anyhow::anyhow!("no answer within {} s", TIMEOUT.as_secs()))
            .and_then(|answer| answer)
            .with_context(|| what)
    }

    async fn send_inner(self) -> anyhow::Result<Answer> {
        let stream = TcpStream::connect(self.addr).await.context("connect")?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .context("HTTP/1.1 handshake")?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        let body = match &self.json {
            Some(json) => Bytes::from(json.to_string()),
            None => Bytes::new(),
        };
        let mut request = Request::builder()
            .method(self.method)
            .uri(self.path.as_str())
            .header(HOST, self.addr.to_string())
            .body(Full::new(body))
            .context("build the request")?;
        let headers = request.headers_mut();
        if self.json.is_some() {
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        if let Some(token) = &self.bearer {
            headers.insert(
                AUTHORIZATION,
                HeaderValue::from_str(&format!("Bearer {token}")).context("bearer header")?,
            );
        }
        if let Some(key) = &self.api_key_header {
            headers.insert(
                "x-api-key",
                HeaderValue::from_str(key).context("key header")?,
            );
        }
        let response = sender.send_request(request).await.context("send")?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .context("read the body")?
            .to_bytes();
        Ok(Answer { status, body })
    }
}
