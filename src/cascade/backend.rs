//! Large-model backends behind one trait: the built-in libtorch MLLM, a TorchScript module
//! with a documented contract, and an OpenAI-compatible chat endpoint.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tch::{CModule, IValue, Kind, Tensor};

use crate::cascade::http;
use crate::config::RemoteApi;
use crate::error::ModelError;
use crate::event::FallbackReason;
use crate::features::WindowFeatures;
use crate::features::audio::AUDIO_DIM;
use crate::features::text::TEXT_DIM;
use crate::features::visual::VIS_DIM;
use crate::models::mllm::{Answer, LABEL_WORDS, Mllm, Query, cross_check_text, prompt_text};
use crate::routing::fusion::Verdict;
use crate::routing::uncertainty::entropy;

/// Why a backend could not answer; the window then falls back to the small model's verdict
/// with [`BackendError::reason`] recorded in the event.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The backend ran but failed.
    #[error("large model {backend}: {reason}")]
    Failed {
        /// Backend name.
        backend: &'static str,
        /// What went wrong.
        reason: String,
    },
    /// A remote endpoint did not answer in time.
    #[error("large model endpoint {url}: no answer within {ms} ms")]
    Timeout {
        /// Endpoint.
        url: String,
        /// Timeout.
        ms: u64,
    },
    /// A remote endpoint could not be reached or answered with an HTTP error.
    #[error("large model endpoint {url}: {reason}; is the server running and the URL right?")]
    Unreachable {
        /// Endpoint.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// The answer could not be understood.
    #[error("large model {backend}: malformed answer: {reason}")]
    Malformed {
        /// Backend name.
        backend: &'static str,
        /// What was wrong.
        reason: String,
    },
}

impl BackendError {
    /// The event's `fallback_reason` for this failure.
    pub fn reason(&self) -> FallbackReason {
        match self {
            Self::Failed { .. } => FallbackReason::BackendError,
            Self::Timeout { .. } => FallbackReason::BackendTimeout,
            Self::Unreachable { .. } => FallbackReason::BackendUnreachable,
            Self::Malformed { .. } => FallbackReason::MalformedOutput,
        }
    }
}

/// A large model: answers a window, optionally with the two earlier opinions
/// (cross-verification).
pub trait Backend: Send {
    /// Name for logs and events.
    fn name(&self) -> &'static str;
    /// Neutral band the backend's scores use.
    fn band(&self) -> f32;
    /// Answers one window.
    fn judge(
        &mut self,
        text: &str,
        features: &WindowFeatures,
        earlier: Option<(Verdict, Verdict)>,
    ) -> Result<Answer, BackendError>;
    /// Gets ready to answer (a worker calls it once, when it starts).
    fn prepare(&mut self) {}
}

/// Builds a backend: the heavy part of loading, run on the worker's own thread.
pub type Loader = Box<dyn FnOnce() -> Result<Box<dyn Backend>, ModelError> + Send>;

/// A backend whose weights load on its worker thread when the worker starts, so the
/// streams' first windows do not wait for them (the local SmolLM2: 0.8 s of decoding on
/// 2 cores). Its files were checked before it was built; should the load still fail
/// (an I/O error), every window it is asked about falls back with the error.
pub struct Deferred {
    name: &'static str,
    band: f32,
    state: DeferredState,
}

enum DeferredState {
    Waiting(Loader),
    Ready(Box<dyn Backend>),
    Failed(String),
}

impl Deferred {
    /// A backend named `name` with neutral band `band`, built by `load` when needed.
    pub fn new(name: &'static str, band: f32, load: Loader) -> Self {
        Self {
            name,
            band,
            state: DeferredState::Waiting(load),
        }
    }
}

impl Backend for Deferred {
    fn name(&self) -> &'static str {
        self.name
    }
    fn band(&self) -> f32 {
        self.band
    }
    fn prepare(&mut self) {
        if !matches!(self.state, DeferredState::Waiting(_)) {
            return;
        }
        let placeholder = DeferredState::Failed(String::new());
        let DeferredState::Waiting(load) = std::mem::replace(&mut self.state, placeholder) else {
            unreachable!("checked above");
        };
        let started = std::time::Instant::now();
        self.state = match load() {
            Ok(b) => {
                let secs = started.elapsed().as_secs_f64();
                tracing::debug!(backend = self.name, secs, "large model loaded");
                DeferredState::Ready(b)
            }
            Err(e) => {
                tracing::error!(
                    backend = self.name,
                    "large model failed to load: {e}; its windows keep the small model's verdict"
                );
                DeferredState::Failed(e.to_string())
            }
        };
    }
    fn judge(
        &mut self,
        text: &str,
        features: &WindowFeatures,
        earlier: Option<(Verdict, Verdict)>,
    ) -> Result<Answer, BackendError> {
        self.prepare();
        match &mut self.state {
            DeferredState::Ready(b) => b.judge(text, features, earlier),
            DeferredState::Failed(reason) => Err(BackendError::Failed {
                backend: self.name,
                reason: format!("it failed to load: {reason}"),
            }),
            DeferredState::Waiting(_) => unreachable!("prepare leaves no loader waiting"),
        }
    }
}

/// The built-in SmolLM2 + adapter in libtorch.
pub struct LocalBackend {
    model: Mllm,
}

impl LocalBackend {
    /// Wraps a loaded model.
    pub fn new(model: Mllm) -> Self {
        Self { model }
    }
    /// The model.
    pub fn model(&self) -> &Mllm {
        &self.model
    }
}

impl Backend for LocalBackend {
    fn name(&self) -> &'static str {
        "local"
    }
    fn band(&self) -> f32 {
        self.model.adapter.meta.band
    }
    fn judge(
        &mut self,
        text: &str,
        features: &WindowFeatures,
        earlier: Option<(Verdict, Verdict)>,
    ) -> Result<Answer, BackendError> {
        self.model
            .judge(&Query {
                text,
                features,
                earlier,
            })
            .map_err(|e| BackendError::Failed {
                backend: "local",
                reason: e.to_string(),
            })
    }
}

/// A TorchScript module with this contract (`forward`, batch of one):
///
/// inputs, all `float32`:
/// 1. `text`: `[1, 384]` MiniLM sentence embedding of the transcript (zeros if none),
/// 2. `audio`: `[1, Ta, 47]` audio frames (10 ms hop, raw, as `features::audio`),
/// 3. `visual`: `[1, Tv, 11]` face frames (as `features::visual`),
/// 4. `earlier`: `[1, 4]` small score, small uncertainty, large score, large uncertainty
///    for cross-verification, all NaN on a first pass;
///
/// output: `[1, 4]` (or a tuple `(logits [1, 3], score [1])`): class logits in the order
/// negative, neutral, positive, then the sentiment score.
pub struct TorchScriptBackend {
    module: CModule,
    path: PathBuf,
    band: f32,
    limit: f32,
}

impl TorchScriptBackend {
    /// Loads the module and checks the contract on a dummy window (at start-up).
    pub fn load(path: &Path, band: f32, limit: f32) -> Result<Self, crate::error::ModelError> {
        if !path.is_file() {
            return Err(crate::error::ModelError::Missing {
                path: path.into(),
                flag: "torchscript",
            });
        }
        let module = CModule::load(path).map_err(|e| crate::error::ModelError::Corrupt {
            path: path.into(),
            reason: format!("not a TorchScript module ({e})"),
        })?;
        let mut b = Self {
            module,
            path: path.into(),
            band,
            limit,
        };
        let probe = WindowFeatures {
            text: Some(vec![0.0; TEXT_DIM]),
            audio: vec![0.0; 10 * AUDIO_DIM],
            visual: vec![0.0; VIS_DIM],
            pitch_ref: None,
        };
        b.judge("", &probe, None)
            .map_err(|e| crate::error::ModelError::Corrupt {
                path: path.into(),
                reason: format!("does not follow the module contract: {e}"),
            })?;
        Ok(b)
    }
}

impl Backend for TorchScriptBackend {
    fn name(&self) -> &'static str {
        "torchscript"
    }
    fn band(&self) -> f32 {
        self.band
    }
    fn judge(
        &mut self,
        _text: &str,
        f: &WindowFeatures,
        earlier: Option<(Verdict, Verdict)>,
    ) -> Result<Answer, BackendError> {
        let _g = tch::no_grad_guard();
        let fail = |reason: String| BackendError::Malformed {
            backend: "torchscript",
            reason: format!("{}: {reason}", self.path.display()),
        };
        let text = match &f.text {
            Some(t) => Tensor::from_slice(t),
            None => Tensor::zeros([TEXT_DIM as i64], (Kind::Float, tch::Device::Cpu)),
        }
        .view([1, TEXT_DIM as i64]);
        let audio =
            Tensor::from_slice(&f.audio).view([1, f.audio_frames() as i64, AUDIO_DIM as i64]);
        let visual =
            Tensor::from_slice(&f.visual).view([1, f.visual_frames() as i64, VIS_DIM as i64]);
        let e = match earlier {
            Some((s, l)) => [s.score, s.uncertainty, l.score, l.uncertainty],
            None => [f32::NAN; 4],
        };
        let earlier = Tensor::from_slice(&e).view([1, 4]);
        let out = self
            .module
            .forward_is(&[
                IValue::Tensor(text),
                IValue::Tensor(audio),
                IValue::Tensor(visual),
                IValue::Tensor(earlier),
            ])
            .map_err(|e| BackendError::Failed {
                backend: "torchscript",
                reason: e.to_string(),
            })?;
        let (logits, score) = match out {
            IValue::Tensor(t) if t.numel() == 4 => {
                let t = t.view([4]);
                (t.narrow(0, 0, 3), t.narrow(0, 3, 1))
            }
            IValue::Tuple(v) if v.len() == 2 => match (&v[0], &v[1]) {
                (IValue::Tensor(l), IValue::Tensor(s)) => (l.shallow_clone(), s.shallow_clone()),
                _ => return Err(fail("tuple items are not tensors".into())),
            },
            IValue::Tensor(t) => {
                return Err(fail(format!(
                    "output has shape {:?}, expected [1, 4]",
                    t.size()
                )));
            }
            _ => return Err(fail("expected a [1, 4] tensor or (logits, score)".into())),
        };
        if logits.numel() != 3 || score.numel() != 1 {
            return Err(fail(format!(
                "logits have {} values (want 3), score {} (want 1)",
                logits.numel(),
                score.numel()
            )));
        }
        let p: Vec<f32> = Vec::try_from(logits.view([3]).softmax(-1, Kind::Float))
            .map_err(|e: tch::TchError| fail(e.to_string()))?;
        let probs = [p[0], p[1], p[2]];
        let score = score.view([1]).double_value(&[0]) as f32;
        if !score.is_finite() || probs.iter().any(|v| !v.is_finite()) {
            return Err(fail("non-finite output".into()));
        }
        Ok(Answer {
            score: score.clamp(-self.limit, self.limit),
            probs,
            uncertainty: entropy(&probs),
            prompt_tokens: 0,
        })
    }
}

/// An OpenAI-compatible chat-completions endpoint (vLLM, llama.cpp server, ...), plain
/// HTTP. It gets the same words as the local prompt (transcript, and for stage 3 the two
/// earlier opinions) and must answer one label word. With `logprobs` returned, the class
/// probabilities are the label words' probabilities renormalised; without them, the
/// answered word gets `plain_confidence` and the others share the rest. The score is
/// `limit * (p_positive - p_negative)`.
pub struct OpenAiBackend {
    url: String,
    model: String,
    api: RemoteApi,
    api_key: Option<String>,
    timeout: Duration,
    band: f32,
    limit: f32,
    plain_confidence: f32,
}

impl OpenAiBackend {
    /// A backend for `url` (e.g. `http://127.0.0.1:8080/v1/chat/completions`).
    pub fn new(
        url: &str,
        model: &str,
        api: RemoteApi,
        api_key: Option<String>,
        timeout: Duration,
        band: f32,
        limit: f32,
    ) -> Result<Self, BackendError> {
        crate::config::check_url(url).map_err(|reason| BackendError::Unreachable {
            url: url.into(),
            reason,
        })?;
        Ok(Self {
            url: url.into(),
            model: model.into(),
            api,
            api_key,
            timeout,
            band,
            limit,
            plain_confidence: 0.8,
        })
    }

    /// The request body for a window.
    pub fn body(&self, text: &str, earlier: Option<(Verdict, Verdict)>) -> serde_json::Value {
        let mut user = format!("Words: \"{}\"", prompt_text(text));
        if let Some((s, l)) = earlier {
            user.push_str(&cross_check_text(s, l, self.band));
        }
        user.push_str("\nIs the sentiment positive, neutral or negative?");
        if self.api == RemoteApi::Openai {
            user.push_str(" Answer with one word.");
        }
        let mut body = serde_json::json!({
            "model": self.model,
            "messages": [
                {"role": "system", "content": "You judge the sentiment of a speaker from their words, voice and face."},
                {"role": "user", "content": user}
            ],
            "max_tokens": 3,
            "temperature": 0,
            "logprobs": true,
            "top_logprobs": 10
        });
        if self.api == RemoteApi::LlamaCpp {
            // An equal bias keeps the label words' relative logits; with top_k 3 the
            // post-sampling probabilities are the softmax over the three words.
            let bias: Vec<serde_json::Value> = LABEL_WORDS
                .iter()
                .map(|w| serde_json::json!([w, 50]))
                .collect();
            let extra = serde_json::json!({
                "max_tokens": 1,
                "temperature": 1.0,
                "top_k": 3,
                "top_p": 1.0,
                "min_p": 0.0,
                "seed": 0,
                "top_logprobs": 3,
                "post_sampling_probs": true,
                "logit_bias": bias
            });
            for (k, v) in extra.as_object().expect("an object") {
                body[k] = v.clone();
            }
        }
        body
    }

    /// Reads an answer from a chat-completions response body.
    pub fn parse(&self, body: &str) -> Result<Answer, BackendError> {
        let bad = |reason: String| BackendError::Malformed {
            backend: "openai",
            reason,
        };
        let v: serde_json::Value =
            serde_json::from_str(body).map_err(|e| bad(format!("not JSON ({e})")))?;
        let choice = v
            .get("choices")
            .and_then(|c| c.get(0))
            .ok_or_else(|| bad("no choices[0]".into()))?;
        let label_of = |s: &str| {
            let w = s
                .trim()
                .trim_matches(|c: char| !c.is_alphabetic())
                .to_lowercase();
            LABEL_WORDS.iter().position(|l| *l == w)
        };
        let mut probs = [0f32; 3];
        let mut found = false;
        // llama.cpp's post-sampling `top_probs` (probabilities), else `top_logprobs`.
        for (list, field, is_log) in [
            ("/logprobs/content/0/top_probs", "prob", false),
            ("/logprobs/content/0/top_logprobs", "logprob", true),
        ] {
            let Some(tops) = choice.pointer(list).and_then(|t| t.as_array()) else {
                continue;
            };
            for t in tops {
                if let (Some(tok), Some(v)) = (
                    t.get("token").and_then(|x| x.as_str()),
                    t.get(field).and_then(|x| x.as_f64()),
                ) && let Some(k) = label_of(tok)
                {
                    probs[k] += if is_log { v.exp() } else { v } as f32;
                    found = true;
                }
            }
            if found {
                break;
            }
        }
        if !found {
            let content = choice
                .pointer("/message/content")
                .and_then(|c| c.as_str())
                .ok_or_else(|| bad("no message content".into()))?;
            let first = content.split_whitespace().next().unwrap_or("");
            let k = label_of(first).ok_or_else(|| {
                bad(format!(
                    "answer {:?} is not positive, neutral or negative",
                    content.chars().take(60).collect::<String>()
                ))
            })?;
            let rest = (1.0 - self.plain_confidence) / 2.0;
            probs = [rest; 3];
            probs[k] = self.plain_confidence;
        }
        let sum: f32 = probs.iter().sum();
        for p in &mut probs {
            *p /= sum;
        }
        Ok(Answer {
            score: self.limit * (probs[2] - probs[0]),
            probs,
            uncertainty: entropy(&probs),
            prompt_tokens: 0,
        })
    }
}

impl Backend for OpenAiBackend {
    fn name(&self) -> &'static str {
        "openai"
    }
    fn band(&self) -> f32 {
        self.band
    }
    fn judge(
        &mut self,
        text: &str,
        _features: &WindowFeatures,
        earlier: Option<(Verdict, Verdict)>,
    ) -> Result<Answer, BackendError> {
        let body = self.body(text, earlier).to_string();
        let resp = http::post_json(&self.url, &body, self.api_key.as_deref(), self.timeout)
            .map_err(|e| match e {
                http::HttpError::Timeout => BackendError::Timeout {
                    url: self.url.clone(),
                    ms: self.timeout.as_millis() as u64,
                },
                http::HttpError::Other(reason) => BackendError::Unreachable {
                    url: self.url.clone(),
                    reason,
                },
            })?;
        if !(200..300).contains(&resp.status) {
            return Err(BackendError::Unreachable {
                url: self.url.clone(),
                reason: format!(
                    "HTTP {}: {}",
                    resp.status,
                    resp.body.chars().take(200).collect::<String>()
                ),
            });
        }
        self.parse(&resp.body)
    }
}
