//! Speech recognition per utterance window with whisper.cpp (whisper-rs).
//!
//! Whisper pads every input to 30 s by default, so a 2 s window would cost as much as a
//! 30 s one; with `audio_ctx = "auto"` the encoder context is sized to the window instead.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use whisper_rs::{
    FullParams, SamplingStrategy, WhisperContext, WhisperContextParameters, WhisperState,
};

use crate::assets::convert;
use crate::config::{AsrConfig, AudioCtx};
use crate::error::ModelError;
use crate::source::SAMPLE_RATE;

/// Encoder positions per second of audio (Whisper: 1500 for 30 s).
const CTX_PER_SECOND: f64 = 50.0;
/// Text tokens per second of audio that no speaker exceeds (fast speech is ~4 words/s,
/// ~1.3 tokens per word); a window's decode stops at `secs * MAX_TOKENS_PER_S + 10`, so a
/// repetition loop cannot run on to the 224-token context limit.
const MAX_TOKENS_PER_S: f64 = 7.0;
/// whisper.cpp wants at least this much audio (seconds); shorter windows are padded.
const MIN_INPUT_S: f64 = 1.1;

/// What Whisper heard in one window.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Transcript {
    /// Text, trimmed; empty when nothing reliable was said.
    pub text: String,
    /// Mean probability of the text tokens, in [0, 1] (0 when there is no text).
    pub confidence: f32,
    /// Whisper's probability that the window holds no speech.
    pub(crate) no_speech_prob: f32,
    /// Detected or configured language code.
    pub language: Option<String>,
    /// Wall time spent in Whisper, milliseconds.
    pub(crate) asr_ms: f64,
}

/// A loaded Whisper model: the weights only, shared by every stream that uses the file
/// (each stream decodes with its own state).
pub struct WhisperModel {
    ctx: WhisperContext,
    n_audio_ctx: i32,
    multilingual: bool,
}

impl WhisperModel {
    /// Loads a ggml Whisper model after checking the file, so a bad file gives a clear error.
    pub fn load(path: &Path) -> Result<Self, ModelError> {
        let header = convert::inspect_ggml(path)?;
        let expected = convert::expected_tensor_count(&header.hparams);
        if header.tensors != expected {
            return Err(ModelError::Corrupt {
                path: path.into(),
                reason: format!(
                    "{} tensors where a Whisper model of this size has {expected}",
                    header.tensors
                ),
            });
        }
        let path_str = path.to_str().ok_or_else(|| ModelError::Corrupt {
            path: path.into(),
            reason: "path is not UTF-8".into(),
        })?;
        let mut params = WhisperContextParameters::default();
        params.use_gpu(false);
        let ctx =
            WhisperContext::new_with_params(path_str, params).map_err(|e| ModelError::Corrupt {
                path: path.into(),
                reason: format!("whisper.cpp could not load it ({e})"),
            })?;
        Ok(Self {
            n_audio_ctx: header.hparams.n_audio_ctx,
            multilingual: ctx.is_multilingual(),
            ctx,
        })
    }

    /// A fresh decoding state over these weights.
    fn decoder(self: &Arc<Self>) -> Result<Decoder, ModelError> {
        let state = self.ctx.create_state().map_err(|e| ModelError::Runtime {
            name: "whisper".into(),
            reason: format!("cannot create a decoding state: {e}"),
        })?;
        Ok(Decoder {
            model: self.clone(),
            state,
        })
    }
}

/// Loads each Whisper file once per process: streams share the weights.
#[derive(Default)]
pub struct WhisperModels {
    loaded: HashMap<PathBuf, Arc<WhisperModel>>,
}

impl WhisperModels {
    /// The model in `path`, loaded on first use.
    pub fn get(&mut self, path: &Path) -> Result<Arc<WhisperModel>, ModelError> {
        if let Some(m) = self.loaded.get(path) {
            return Ok(m.clone());
        }
        let m = Arc::new(WhisperModel::load(path)?);
        self.loaded.insert(path.to_path_buf(), m.clone());
        Ok(m)
    }
}

/// A model with one decoding state.
struct Decoder {
    model: Arc<WhisperModel>,
    state: WhisperState,
}

/// One stream's speech recogniser: a decoding state over the shared model, and one over
/// the English-only model for windows in English when `asr.english_model` is set.
pub struct Asr {
    /// Decodes until the language is known to be English (when `english` is set), then is
    /// dropped with its buffers (a Whisper base state is ~200 MB).
    main: Option<Decoder>,
    /// Decodes once the stream's language is known to be English (`asr.english_model`).
    english: Option<Decoder>,
    cfg: AsrConfig,
    /// Language detected on an earlier window, reused unless `redetect_language`.
    detected: Option<String>,
    /// The state's encoder context has been set by a decode (see [`Asr::prime`]).
    primed: bool,
    padded: Vec<f32>,
}

impl Asr {
    /// Loads `cfg.model` (and `cfg.english_model`) on its own: for single-stream users.
    pub fn load(path: &Path, cfg: &AsrConfig) -> Result<Self, ModelError> {
        let cfg = AsrConfig {
            model: path.to_path_buf(),
            english_model: None,
            ..cfg.clone()
        };
        Self::new(&mut WhisperModels::default(), &cfg)
    }

    /// A recogniser over models from `models` (shared with other streams). With
    /// `language = "en"` and an English model, only that model is used; with "auto"
    /// (and no re-detection) the main model detects the language on the first window with
    /// text, and the English model takes over when it is English.
    pub fn new(models: &mut WhisperModels, cfg: &AsrConfig) -> Result<Self, ModelError> {
        let english_path = cfg.english_model.as_deref();
        let main_path = match english_path {
            Some(e) if cfg.language == "en" => e,
            _ => cfg.model.as_path(),
        };
        let main = models.get(main_path)?;
        if !main.multilingual && cfg.language != "en" && cfg.language != "auto" {
            return Err(ModelError::Runtime {
                name: main_path.display().to_string(),
                reason: format!(
                    "this model is English-only but asr.language = {:?}; use a multilingual model such as ggml-base.bin",
                    cfg.language
                ),
            });
        }
        let english = match english_path {
            Some(e) if main.multilingual && cfg.language == "auto" && !cfg.redetect_language => {
                Some(models.get(e)?.decoder()?)
            }
            _ => None,
        };
        Ok(Self {
            main: Some(main.decoder()?),
            english,
            cfg: cfg.clone(),
            detected: None,
            primed: false,
            padded: Vec::with_capacity(SAMPLE_RATE as usize * 30),
        })
    }

    /// Encoder context for a window of `secs` seconds of a model with `n_audio_ctx`.
    pub(crate) fn audio_ctx_for(&self, secs: f64, n_audio_ctx: i32) -> i32 {
        match self.cfg.audio_ctx {
            AudioCtx::Full => n_audio_ctx,
            AudioCtx::Auto => {
                let margin = (self.cfg.ctx_margin_s as f64 * CTX_PER_SECOND).round() as i32;
                ((secs * CTX_PER_SECOND).ceil() as i32 + margin).min(n_audio_ctx)
            }
        }
    }

    /// whisper.cpp detects the language before it applies a call's encoder context, so
    /// on a fresh state detection runs the full 30 s encoder (seconds on 2 cores, and the
    /// first window waited for it). One tiny decode with this window's context first sets
    /// the state's context, and detection then costs about as much as the window.
    fn prime(&mut self, audio_ctx: i32, min_len: usize) -> Result<(), ModelError> {
        let mut p = full_params(&self.cfg, "en", audio_ctx);
        p.set_max_tokens(1);
        let Some(main) = &mut self.main else {
            return Ok(());
        };
        main.state
            .full(p, &self.padded[..min_len.min(self.padded.len())])
            .map_err(|e| ModelError::Runtime {
                name: "whisper".into(),
                reason: format!("preparing language detection failed: {e}"),
            })?;
        self.primed = true;
        Ok(())
    }

    /// The window's language by the main model: one encoder pass at the window's context
    /// and one decoder step (`None` when there is no main model any more).
    fn detect_language(&mut self, secs: f64, min_len: usize) -> Result<Option<String>, ModelError> {
        let Some(n_ctx) = self.main.as_ref().map(|m| m.model.n_audio_ctx) else {
            return Ok(None);
        };
        let audio_ctx = self.audio_ctx_for(secs, n_ctx);
        self.prime(audio_ctx, min_len)?;
        let threads = self.cfg.threads as usize;
        let Some(main) = &mut self.main else {
            return Ok(None);
        };
        let fail = |e: whisper_rs::WhisperError| ModelError::Runtime {
            name: "whisper".into(),
            reason: format!("language detection failed: {e}"),
        };
        main.state.pcm_to_mel(&self.padded, threads).map_err(fail)?;
        let (id, probs) = main.state.lang_detect(0, threads).map_err(fail)?;
        // `asr.languages`: the most probable of the allowed ones.
        let allowed = self
            .cfg
            .languages
            .iter()
            .filter_map(|l| whisper_rs::get_lang_id(l))
            .filter_map(|i| Some((i, *probs.get(i as usize)?)))
            .max_by(|a, b| a.1.total_cmp(&b.1));
        let id = allowed.map_or(id, |(i, _)| i);
        Ok(whisper_rs::get_lang_str(id).map(str::to_string))
    }

    /// Seconds of speech still going on after which a live stream detects its language
    /// ahead of its first window ([`Asr::detect_ahead`]).
    pub const DETECT_AHEAD_S: f64 = 2.5;

    /// Whether the stream's language has still to be detected once, before windows can
    /// be decoded by the right model (an English model waiting, or `asr.languages`).
    pub fn needs_language(&self) -> bool {
        let restricted = !self.cfg.languages.is_empty() && self.cfg.language == "auto";
        (self.english.is_some() || restricted)
            && self.detected.is_none()
            && !self.cfg.redetect_language
    }

    /// Detects the stream's language on `speech` that is still going on, so that the
    /// first window is decoded at once when it closes: done on the first window itself,
    /// detection (an encoder pass of the multilingual model) delayed that window's event
    /// by 1.3 s with three live streams starting together. The language is then the
    /// stream's, as if the first window had found it.
    pub fn detect_ahead(&mut self, speech: &[f32]) -> Result<(), ModelError> {
        if !self.needs_language() {
            return Ok(());
        }
        let (secs, min_len) = self.pad(speech);
        let Some(language) = self.detect_language(secs, min_len)? else {
            return Ok(());
        };
        tracing::debug!(%language, secs, "language detected ahead of the first window");
        if self.english.is_some() && language == "en" {
            self.main = None; // English from here on: the English model decodes.
        }
        self.detected = Some(language);
        Ok(())
    }

    /// Copies `audio` into the reused input buffer, padded with silence to Whisper's
    /// shortest input; returns its seconds and that shortest length in samples.
    fn pad(&mut self, audio: &[f32]) -> (f64, usize) {
        let min_len = (MIN_INPUT_S * SAMPLE_RATE as f64) as usize;
        self.padded.clear();
        self.padded.extend_from_slice(audio);
        if self.padded.len() < min_len {
            self.padded.resize(min_len, 0.0);
        }
        (self.padded.len() as f64 / SAMPLE_RATE as f64, min_len)
    }

    /// Transcribes one window of 16 kHz mono audio.
    pub fn transcribe(&mut self, audio: &[f32]) -> Result<Transcript, ModelError> {
        let started = Instant::now();
        let (secs, min_len) = self.pad(audio);
        // With an English model waiting and the language not known yet, the main model
        // only detects it (no decode); an English window goes to the English model.
        let restricted = !self.cfg.languages.is_empty() && self.cfg.language == "auto";
        let guess = if (self.english.is_some() || restricted) && self.detected.is_none() {
            self.detect_language(secs, min_len)?
        } else {
            None
        };
        let known = self.detected.clone().or(guess);
        let use_english = self.english.is_some() && known.as_deref() == Some("en");
        let model = &pick(&mut self.english, &mut self.main, use_english).model;
        let (multilingual, n_ctx) = (!use_english && model.multilingual, model.n_audio_ctx);
        let audio_ctx = self.audio_ctx_for(secs, n_ctx);
        if multilingual && known.is_none() && self.cfg.language == "auto" && !self.primed {
            self.prime(audio_ctx, min_len)?;
        }
        let language = match (&known, multilingual) {
            (_, false) => "en",
            (Some(lang), true) => lang.as_str(),
            (None, true) => self.cfg.language.as_str(),
        };
        let mut p = full_params(&self.cfg, language, audio_ctx);
        p.set_max_tokens((secs * MAX_TOKENS_PER_S).ceil() as i32 + 10);
        let dec = pick(&mut self.english, &mut self.main, use_english);
        dec.state
            .full(p, &self.padded)
            .map_err(|e| ModelError::Runtime {
                name: "whisper".into(),
                reason: format!("transcription failed: {e}"),
            })?;
        let heard = read_segments(dec)?;
        let language = if multilingual {
            whisper_rs::get_lang_str(dec.state.full_lang_id_from_state()).map(str::to_string)
        } else {
            Some("en".to_string())
        };
        let text = clean_text(&self.cfg, &heard);
        if self.cfg.language == "auto"
            && !self.cfg.redetect_language
            && self.detected.is_none()
            && !text.is_empty()
        {
            self.detected = language.clone();
            if self.english.is_some() && self.detected.as_deref() == Some("en") {
                self.main = None; // English from here on: the English model decodes.
            }
        }
        let confidence = if text.is_empty() || heard.n_tok == 0 {
            0.0
        } else {
            heard.prob_sum / heard.n_tok as f32
        };
        Ok(Transcript {
            text,
            confidence,
            no_speech_prob: heard.no_speech,
            language,
            asr_ms: started.elapsed().as_secs_f64() * 1e3,
        })
    }
}

/// The decoder for a window: the English one when asked for and loaded, else the main one
/// (which is only dropped once the English one has taken over). Free-standing so the
/// caller keeps its other fields.
fn pick<'a>(
    english: &'a mut Option<Decoder>,
    main: &'a mut Option<Decoder>,
    use_english: bool,
) -> &'a mut Decoder {
    let english_turn = use_english || main.is_none();
    match (english, main) {
        (Some(e), _) if english_turn => e,
        (_, Some(m)) => m,
        _ => unreachable!("a recogniser always has a decoder"),
    }
}

/// Collects the text and token statistics of the segments Whisper just decoded.
fn read_segments(dec: &Decoder) -> Result<Heard, ModelError> {
    let eot = dec.model.ctx.token_eot();
    let mut heard = Heard {
        text: String::new(),
        prob_sum: 0.0,
        logp_sum: 0.0,
        n_tok: 0,
        no_speech: 0.0,
    };
    for seg in dec.state.as_iter() {
        heard.no_speech = heard.no_speech.max(seg.no_speech_probability());
        heard
            .text
            .push_str(&seg.to_str_lossy().map_err(|e| ModelError::Runtime {
                name: "whisper".into(),
                reason: e.to_string(),
            })?);
        for i in 0..seg.n_tokens() {
            if let Some(tok) = seg.get_token(i) {
                if tok.token_id() >= eot {
                    continue; // special and timestamp tokens
                }
                let pr = tok.token_probability();
                heard.prob_sum += pr;
                heard.logp_sum += pr.max(1e-9).ln();
                heard.n_tok += 1;
            }
        }
    }
    Ok(heard)
}

/// The window's final text: trimmed, emptied for silence and non-speech markers, with
/// back-to-back repeats collapsed.
fn clean_text(cfg: &AsrConfig, heard: &Heard) -> String {
    let mut text = heard.text.trim().to_string();
    let avg_logp = if heard.n_tok > 0 {
        heard.logp_sum / heard.n_tok as f32
    } else {
        f32::NEG_INFINITY
    };
    tracing::debug!(raw = %text, no_speech = heard.no_speech, avg_logp, "whisper heard");
    // Whisper's own rule for silence: high no-speech probability and low confidence.
    if heard.no_speech > cfg.no_speech_threshold && avg_logp < cfg.logprob_threshold {
        text.clear();
    }
    if is_non_speech(&text) {
        text.clear();
    }
    collapse_repeats(&text)
}

/// Raw text and token statistics of one window's Whisper segments.
struct Heard {
    /// Segment texts, concatenated.
    text: String,
    /// Sum of text token probabilities.
    prob_sum: f32,
    /// Sum of text token log-probabilities.
    logp_sum: f32,
    /// Number of text tokens.
    n_tok: usize,
    /// Highest no-speech probability of a segment.
    no_speech: f32,
}

/// Greedy decoding parameters for one window: one segment, no context, timestamps or
/// printing, with the configured threads and silence thresholds.
fn full_params<'a>(cfg: &AsrConfig, language: &'a str, audio_ctx: i32) -> FullParams<'a, 'a> {
    let mut p = FullParams::new(SamplingStrategy::Greedy { best_of: 1 });
    p.set_language(Some(language));
    p.set_n_threads(cfg.threads as i32);
    p.set_audio_ctx(audio_ctx);
    p.set_no_context(true);
    p.set_single_segment(true);
    p.set_no_timestamps(true);
    p.set_suppress_blank(true);
    p.set_suppress_nst(true);
    p.set_print_progress(false);
    p.set_print_realtime(false);
    p.set_print_special(false);
    p.set_print_timestamps(false);
    p.set_no_speech_thold(cfg.no_speech_threshold);
    p.set_logprob_thold(cfg.logprob_threshold);
    if language == "zh" {
        // Whisper writes Mandarin in traditional or simplified characters as it pleases;
        // a simplified prompt keeps it to the script the Chinese model was trained on.
        p.set_initial_prompt(ZH_PROMPT);
    }
    p
}

/// Prompt for Mandarin windows: "What follows are sentences in Mandarin." (simplified).
const ZH_PROMPT: &str = "以下是普通话的句子。";

/// Text that Whisper emits for non-speech ("[Music]", "(applause)", "...").
fn is_non_speech(text: &str) -> bool {
    let t = text.trim();
    if t.is_empty() || t.chars().all(|c| !c.is_alphanumeric()) {
        return true;
    }
    let bracketed = |o: char, c: char| {
        t.starts_with(o) && t.ends_with(c) && t[1..t.len() - 1].chars().all(|ch| ch != o && ch != c)
    };
    bracketed('[', ']') || bracketed('(', ')') || bracketed('*', '*')
}

/// Removes sentences repeated back to back, Whisper's commonest hallucination on short
/// inputs ("And so my fellow Americans. And so my fellow Americans."), including loops of
/// several sentences and a loop cut off mid-sentence by the token limit. A repeated block
/// is whole sentences of at least three words, since people do say "No. No."
fn collapse_repeats(text: &str) -> String {
    let words: Vec<&str> = text.split_whitespace().collect();
    let norm: Vec<String> = words
        .iter()
        .map(|w| {
            w.chars()
                .filter(|c| c.is_alphanumeric())
                .collect::<String>()
                .to_lowercase()
        })
        .collect();
    let ends = |i: usize| words[i].ends_with(['.', '!', '?']);
    // Indices of the words kept so far.
    let mut kept: Vec<usize> = Vec::with_capacity(words.len());
    let mut i = 0;
    'words: while i < words.len() {
        for p in 3..=kept.len() {
            let block = &kept[kept.len() - p..];
            let starts_sentence = block[0] == 0 || ends(block[0] - 1);
            if !starts_sentence || !ends(block[p - 1]) {
                continue;
            }
            let n = p.min(words.len() - i);
            let same = (0..n).all(|k| norm[i + k] == norm[block[k]]);
            let whole = n == p && (i + p == words.len() || ends(i + p - 1));
            let cut_off = n < p && n >= 3 && i + n == words.len();
            if same && (whole || cut_off) {
                i += n;
                continue 'words;
            }
        }
        kept.push(i);
        i += 1;
    }
    let kept = cut_trailing_loop(&kept, &norm);
    kept.iter().map(|&k| words[k]).collect::<Vec<_>>().join(" ")
}

/// A block of 2..=8 words repeated back to back at least [`LOOP_REPEATS`] times up to the
/// end of the text (the last copy may be cut off): the decoder looping until its token
/// limit ("2 9 1 8 2 9 1 8 2 9 1 8 ..."). Keeps the text before the loop and one copy.
fn cut_trailing_loop(kept: &[usize], norm: &[String]) -> Vec<usize> {
    let w = |i: usize| &norm[kept[i]];
    for p in 2..=8.min(kept.len() / LOOP_REPEATS) {
        // Walk back from the end while each word equals the one p words later.
        let n = kept.len();
        let mut start = n - p;
        while start > 0 && w(start - 1) == w(start - 1 + p) {
            start -= 1;
        }
        if n - start >= LOOP_REPEATS * p {
            return kept[..start + p].to_vec();
        }
    }
    kept.to_vec()
}

/// Back-to-back copies of a short block that make a decoder loop.
const LOOP_REPEATS: usize = 3;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_language_is_detected_ahead_on_speech_still_going_on() {
        let dir = crate::assets::default_models_dir();
        let cfg = AsrConfig {
            model: dir.join("ggml-base-q8_0.bin"),
            english_model: Some(dir.join("ggml-tiny.en-q8_0.bin")),
            ..AsrConfig::default()
        };
        let wav = dir.join("test/jfk.wav");
        let have = [&cfg.model, cfg.english_model.as_ref().unwrap(), &wav];
        if !have.iter().all(|p| p.is_file()) {
            assert!(std::env::var_os("CI").is_none(), "CI: {have:?} missing");
            eprintln!("skipped: Whisper models or jfk.wav not installed (scripts/setup)");
            return;
        }
        let audio = crate::segment::silero::tests::wav_samples(&std::fs::read(&wav).unwrap());
        let mut asr = Asr::new(&mut WhisperModels::default(), &cfg).unwrap();
        assert!(asr.needs_language());
        // The first 2.5 s of JFK's sentence, as a live stream has it while he speaks.
        asr.detect_ahead(&audio[..(Asr::DETECT_AHEAD_S * SAMPLE_RATE as f64) as usize])
            .unwrap();
        assert_eq!(asr.detected.as_deref(), Some("en"));
        assert!(!asr.needs_language());
        assert!(asr.main.is_none(), "the English model decodes from here on");
        let t = asr.transcribe(&audio).unwrap();
        assert!(
            t.text.to_lowercase().contains("ask not what your country"),
            "{}",
            t.text
        );
        assert_eq!(t.language.as_deref(), Some("en"));
    }

    #[test]
    fn repeated_sentences_collapse() {
        assert_eq!(
            collapse_repeats("And so my fellow Americans. And so my fellow Americans."),
            "And so my fellow Americans."
        );
        assert_eq!(collapse_repeats("No. No. I said no."), "No. No. I said no.");
        assert_eq!(
            collapse_repeats("I love it! I love it, really."),
            "I love it! I love it, really."
        );
        assert_eq!(
            collapse_repeats(
                "I understand it's frustrating. Let me run a line test. I understand it's frustrating. Let me run a line test. I understand it's"
            ),
            "I understand it's frustrating. Let me run a line test."
        );
        assert_eq!(
            collapse_repeats("We will see. We will see. We will see it through."),
            "We will see. We will see it through."
        );
        // A loop without sentence ends, cut off by the token limit.
        assert_eq!(
            collapse_repeats("Sure, it's 2 9 1 8 2 9 1 8 2 9 1 8 2 9 1"),
            "Sure, it's 2 9 1 8"
        );
        // Two copies are speech ("very very", "bye bye").
        assert_eq!(collapse_repeats("bye now bye now"), "bye now bye now");
    }

    #[test]
    fn non_speech_markers() {
        assert!(is_non_speech("[Music]"));
        assert!(is_non_speech(" (applause) "));
        assert!(is_non_speech("..."));
        assert!(is_non_speech(""));
        assert!(!is_non_speech("I loved it."));
        assert!(!is_non_speech("(laughs) that was great (really)"));
    }
}
