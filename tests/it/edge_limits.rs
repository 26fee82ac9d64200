//! `http::callback_router_with` and `EdgeLimits`: the layers a host puts in
//! front of the callback endpoint, over a real socket. More requests than
//! the concurrency limit are answered 503 at once; a request that takes
//! longer than the timeout is answered 408; the body limit follows the
//! partners' caps unless set, and a body cut by it is recorded as too
//! large, not as a client that went away.

use std::net::SocketAddr;
use std::time::Duration;

use async_trait::async_trait;
use liaison::callback::{Disposition, JsonMatcher, StandardWebhooks};
use liaison::engine::{Liaison, Partner};
use liaison::http::{EdgeLimits, callback_router_with};
use liaison::store::{CallbackFilter, OutboxStore, SqliteStore};
use liaison::{AttemptContext, PartnerAdapter, PartnerError, Submission, SubmitOutcome};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// Never called: nothing is sent here.
#[derive(Debug)]
struct Idle;

#[async_trait]
impl PartnerAdapter for Idle {
    async fn submit(
        &self,
        _: &AttemptContext,
        _: &Submission,
    ) -> Result<SubmitOutcome, PartnerError> {
        Err(PartnerError::transient("not under test"))
    }
}

/// Partner "lab" (Standard Webhooks, JSON callbacks, callback cap `cap`)
/// behind `callback_router_with(limits)` on a real port.
struct Edge {
    _dir: TempDir,
    store: SqliteStore,
    addr: SocketAddr,
}

impl Edge {
    async fn start(cap: usize, limits: EdgeLimits) -> Edge {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("outbox.db")).unwrap();
        let partner = Partner::new("lab", Idle)
            .callbacks(
                JsonMatcher::builder(StandardWebhooks::new(SECRET).unwrap())
                    .build()
                    .unwrap(),
            )
            .max_callback_bytes(cap);
        let liaison = Liaison::builder(store.clone())
            .partner(partner)
            .build()
            .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = callback_router_with(liaison, limits);
        tokio::spawn(async move { axum::serve(listener, app).await });
        Edge {
            _dir: dir,
            store,
            addr,
        }
    }

    async fn callbacks(&self) -> Vec<liaison::callback::StoredCallback> {
        self.store
            .list_callbacks(&CallbackFilter::default().limit(1000))
            .await
            .unwrap()
    }

    /// A connection that sent a request's head and `sent` of `declared`
    /// body bytes, and then waits: its request is in the router.
    async fn stalled(&self, path: &str, declared: usize, sent: usize) -> TcpStream {
        let mut stream = TcpStream::connect(self.addr).await.unwrap();
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
             Content-Length: {declared}\r\n\r\n"
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        stream.write_all(&vec![b' '; sent]).await.unwrap();
        stream.flush().await.unwrap();
        stream
    }
}

/// A POST of `body` to `path` with these extra header lines; the answer's
/// status line and headers.
async fn post(addr: SocketAddr, path: &str, headers: &str, body: &[u8]) -> String {
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
         Content-Type: application/json\r\n{headers}"
    )
    .into_bytes();
    let lower = headers.to_ascii_lowercase();
    if !lower.contains("transfer-encoding") && !lower.contains("content-length") {
        request.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
    }
    request.extend_from_slice(b"\r\n");
    request.extend_from_slice(body);
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    // Written while the answer is read: a refused body may never be read.
    let write = tokio::spawn(async move {
        let _ = writer.write_all(&request).await;
        writer
    });
    head_of(&mut reader)
        .await
        .inspect(|_| write.abort())
        .unwrap()
}

/// Read until the end of the answer's head.
async fn head_of(reader: &mut (impl AsyncReadExt + Unpin)) -> Option<String> {
    let mut answer = Vec::new();
    let mut chunk = [0u8; 4096];
    while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
        match tokio::time::timeout(Duration::from_secs(30), reader.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => answer.extend_from_slice(&chunk[..n]),
            Err(_) => panic!("no answer within 30 s"),
        }
    }
    Some(String::from_utf8_lossy(&answer).into_owned())
}

/// Whether the server answered (or closed) a stalled connection, without
/// waiting: a stalled request still in the router has had no answer.
fn answered(stream: &TcpStream) -> bool {
    let mut byte = [0u8; 1];
    match stream.try_read(&mut byte) {
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
        Ok(_) => true,
    }
}

fn status(head: &str) -> u16 {
    head.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0)
}

fn signed(msg_id: &str, body: &[u8]) -> String {
    let ts = chrono::Utc::now().timestamp();
    let signature = StandardWebhooks::new(SECRET)
        .unwrap()
        .sign(msg_id, ts, body);
    format!("webhook-id: {msg_id}\r\nwebhook-timestamp: {ts}\r\nwebhook-signature: {signature}\r\n")
}

/// Two requests hold the router (clients that never finish their bodies);
/// a third is answered 503 with `Retry-After` at once, and nothing of it is
/// stored. Once they are gone, requests are served again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_beyond_the_concurrency_limit_are_answered_503_at_once() {
    let edge = Edge::start(
        64 * 1024,
        EdgeLimits::default()
            .concurrency(2)
            .timeout(Duration::from_secs(300)),
    )
    .await;
    let mut held = [
        edge.stalled("/callbacks/lab", 1000, 10).await,
        edge.stalled("/callbacks/lab", 1000, 10).await,
    ];
    // The stalled requests reach the router in their own time: ask until
    // the third is shed (each ask is answered at once either way). A
    // stalled request that reached the router while an ask held the
    // budget was itself shed (answered): it is replaced by a new one.
    let mut shed = None;
    let mut refused = 0;
    for _ in 0..400 {
        let head = post(edge.addr, "/callbacks/nobody", "", b"{}").await;
        if status(&head) == 503 && !held.iter().any(answered) {
            shed = Some(head);
            break;
        }
        assert!(matches!(status(&head), 401 | 503), "{head}");
        refused += usize::from(status(&head) == 401);
        for stream in &mut held {
            if answered(stream) {
                *stream = edge.stalled("/callbacks/lab", 1000, 10).await;
            }
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let shed = shed.expect("a third request at once is shed");
    assert!(
        shed.to_ascii_lowercase().contains("retry-after: 1"),
        "{shed}"
    );
    let stored = edge.callbacks().await;
    // Each ask that went through was stored (rejected: an unknown
    // partner); the shed one was not.
    assert_eq!(
        stored.iter().filter(|c| c.partner == "nobody").count(),
        refused,
        "the shed request was not stored: {stored:?}"
    );
    drop(held);
    // Their clients gone, the budget comes back.
    let mut served = false;
    for _ in 0..400 {
        if status(&post(edge.addr, "/callbacks/nobody", "", b"{}").await) == 401 {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(served, "requests are served again");
}

/// A client that stops sending its body is answered 408 once the timeout
/// passes, and its connection is let go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_past_the_timeout_is_answered_408() {
    let edge = Edge::start(
        64 * 1024,
        EdgeLimits::default().timeout(Duration::from_millis(200)),
    )
    .await;
    let mut stream = edge.stalled("/callbacks/lab", 1000, 10).await;
    let head = head_of(&mut stream).await.unwrap();
    assert_eq!(status(&head), 408, "{head}");
}

/// Unless set, the body limit is the largest callback cap: a partner whose
/// cap is above the default 1 MiB still gets its 1.5 MiB callbacks, and a
/// declared size above it is refused before anything is read or stored. A
/// set limit cuts a chunked body, which is recorded as too large.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_body_limit_follows_the_largest_partner_cap_unless_set() {
    let edge = Edge::start(2 * 1024 * 1024, EdgeLimits::default()).await;
    let body = vec![b' '; 1536 * 1024];
    let head = post(
        edge.addr,
        "/callbacks/lab",
        &signed("msg_big", &body),
        &body,
    )
    .await;
    assert_eq!(status(&head), 400, "read, and malformed (not JSON): {head}");
    assert_eq!(
        edge.callbacks().await[0].disposition,
        Disposition::Malformed
    );

    let head = post(
        edge.addr,
        "/callbacks/lab",
        "Content-Length: 10737418240\r\n",
        b"",
    )
    .await;
    assert_eq!(status(&head), 413, "{head}");
    assert_eq!(
        edge.callbacks().await.len(),
        1,
        "nothing stored at the edge"
    );

    let edge = Edge::start(64 * 1024, EdgeLimits::default().max_body_bytes(1000)).await;
    let mut chunked = Vec::new();
    for part in vec![b' '; 4000].chunks(500) {
        chunked.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
        chunked.extend_from_slice(part);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let head = post(
        edge.addr,
        "/callbacks/lab",
        "Transfer-Encoding: chunked\r\n",
        &chunked,
    )
    .await;
    assert_eq!(status(&head), 413, "{head}");
    let stored = edge.callbacks().await;
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert_eq!(
        stored[0].disposition,
        Disposition::TooLarge,
        "cut by the limit, not a client that went away: {:?}",
        stored[0]
    );
}
