//! The router: the one place events are finished. It owns the small model (shared by all
//! streams), the cascade (shared large-model workers) and the sinks; it turns windows from
//! the stream threads into events, in window order per stream. It talks to the small
//! model through [`SmallModel`] and to the large model through the cascade's backends, so
//! it is tested with fakes of both.

use std::collections::HashMap;
use std::time::Instant;

use crossbeam_channel::{Receiver, Select};

use crate::app::stream::{ToRouter, Windowed};
use crate::cascade::{Cascade, stamp};
use crate::error::{Error, SinkError};
use crate::event::{Event, Output, Sentiment, StreamStatus, SummaryEvent};
use crate::features::WindowFeatures;
use crate::metrics::Metrics;
use crate::models::ubm::{Modalities, Ubm};
use crate::routing::uncertainty::polarity;
use crate::routing::verdict::settle;
use crate::sinks::Fanout;
use crate::summary::Summarizer;

/// The small model as the router sees it: a verdict per window (stage `ubm`).
pub(crate) trait SmallModel {
    /// Scores one window.
    fn score(&self, features: &WindowFeatures) -> Sentiment;
    /// Neutral band of its scores.
    fn band(&self) -> f32;
}

impl SmallModel for Ubm {
    fn score(&self, features: &WindowFeatures) -> Sentiment {
        let p = self.predict(&[features], Modalities::ALL)[0];
        let k = self.meta.event_scale();
        Sentiment::small(
            p.score * k,
            polarity(p.score, self.meta.band),
            p.probs,
            p.uncertainty,
        )
    }
    fn band(&self) -> f32 {
        self.meta.event_band()
    }
}

/// How a stream thread ended, as far as the router knows.
#[derive(Debug)]
pub(crate) enum StreamEnd {
    /// It reported that it finished (end of input or shutdown).
    Finished,
    /// It reported the error that ended it early.
    Failed(Error),
    /// It hung up without reporting (it panicked or was killed).
    Vanished,
}

/// What the router ends with.
pub(crate) struct Finished {
    /// Per stream (by index): how it ended.
    pub streams: Vec<StreamEnd>,
    /// Errors of sinks that failed.
    pub(crate) sink_errors: Vec<SinkError>,
}

/// Shared stages and outputs.
pub(crate) struct Router {
    small: Vec<Box<dyn SmallModel>>,
    cascade: Option<Cascade>,
    sinks: Fanout,
    metrics: std::sync::Arc<Metrics>,
    notices: bool,
    /// Fired when every sink has failed: nothing could be written any more.
    stop: Option<std::sync::Arc<crate::app::shutdown::Trigger>>,
    /// Sinks when the run started.
    sinks_at_start: usize,
    summaries: Summaries,
}

/// Per-call summaries: one when a call ends, and one every `every_s` seconds of stream
/// time while it runs (0: only at the end). A call is a stream, or the streams of one
/// recording's channels (`ID:speaker`), summarised together once all have ended.
#[derive(Debug, Default)]
pub(crate) struct Summaries {
    on: bool,
    every_s: f64,
    /// `segment.talk_pause_s`: a pause shorter than this between two windows of one
    /// speaker is talk in the summaries.
    talk_pause_s: f64,
    streams: HashMap<String, (Summarizer, f64)>,
    /// Channel streams: stream id -> call id.
    call_of: HashMap<String, String>,
    /// Calls with channel streams: streams still running, and whether all read their
    /// input to the end so far.
    running: HashMap<String, (usize, bool)>,
}

impl Summaries {
    /// Summaries on, every `every_s` seconds of stream time (0: only at the end).
    pub fn new(every_s: f64) -> Self {
        Self {
            on: true,
            every_s,
            ..Self::default()
        }
    }

    /// Pauses between a speaker's windows shorter than `talk_pause_s` count as talk.
    pub fn talk_pause(mut self, talk_pause_s: f64) -> Self {
        self.talk_pause_s = talk_pause_s;
        self
    }

    /// Registers the streams of a call split by channel.
    pub fn call(mut self, call: &str, streams: &[String]) -> Self {
        for s in streams {
            self.call_of.insert(s.clone(), call.to_string());
        }
        self.running.insert(call.to_string(), (streams.len(), true));
        self
    }

    fn output(stream: &str, s: &Summarizer, at: f64, complete: bool) -> Output {
        Output::Summary(Box::new(SummaryEvent {
            stream: stream.to_string(),
            summary: s.summary(at, complete),
            emitted_at_ms: crate::event::now_ms(),
        }))
    }

    /// Counts a window; a summary when one is due.
    fn window(&mut self, e: &Event) -> Option<Output> {
        if !self.on {
            return None;
        }
        let every = self.every_s;
        let call = self.call_of.get(&e.stream).map_or(e.stream.as_str(), |c| c);
        if !self.streams.contains_key(call) {
            let first = (Summarizer::new(self.talk_pause_s), every);
            self.streams.insert(call.to_string(), first);
        }
        let (s, due) = self.streams.get_mut(call).expect("inserted above");
        s.add(
            e.start,
            e.end,
            e.voiced_s,
            e.score,
            e.speaker.as_deref(),
            &e.text,
        );
        if every > 0.0 && e.end >= *due {
            *due = (e.end / every).floor() * every + every;
            return Some(Self::output(call, s, e.end, false));
        }
        None
    }

    /// The last summary of a stream that ended at stream time `at`; `complete`: it read
    /// its input to the end (not stopped by an error or a shutdown).
    fn ended(&mut self, stream: &str, at: f64, complete: bool) -> Option<Output> {
        if !self.on {
            return None;
        }
        let call = self
            .call_of
            .get(stream)
            .cloned()
            .unwrap_or_else(|| stream.to_string());
        let mut complete = complete;
        if let Some((left, all)) = self.running.get_mut(&call) {
            *left = left.saturating_sub(1);
            *all &= complete;
            if *left > 0 {
                return None;
            }
            complete = *all;
        }
        let (s, _) = self.streams.remove(&call).unwrap_or_default();
        Some(Self::output(&call, &s, at, complete))
    }
}

/// Writes one finished event to the metrics and the sinks (and a summary when due).
fn emit(sinks: &mut Fanout, metrics: &Metrics, summaries: &mut Summaries, e: Event) {
    metrics.window(&e);
    tracing::debug!(stream = %e.stream, seq = e.seq, start = e.start, end = e.end, stage = ?e.stage, "event");
    let summary = summaries.window(&e);
    sinks.write(&Output::Window(e));
    if let Some(s) = summary {
        sinks.write(&s);
    }
}

impl Router {
    /// A router over loaded models and opened sinks; `notices`: write stream notices
    /// (started, interrupted, ...) to the sinks too.
    pub fn new(
        small: Vec<Box<dyn SmallModel>>,
        cascade: Option<Cascade>,
        sinks: Fanout,
        metrics: std::sync::Arc<Metrics>,
        notices: bool,
    ) -> Self {
        Self {
            small,
            cascade,
            sinks_at_start: sinks.len(),
            sinks,
            metrics,
            notices,
            stop: None,
            summaries: Summaries::default(),
        }
    }

    /// Writes call summaries (see [`Summaries`]).
    pub fn summarizing(mut self, summaries: Summaries) -> Self {
        self.summaries = summaries;
        self
    }

    /// Fires `stop` (the run's shutdown) when every sink has failed.
    pub fn stopping(mut self, stop: std::sync::Arc<crate::app::shutdown::Trigger>) -> Self {
        self.stop = Some(stop);
        self
    }

    /// With every output gone, the streams stop: their work could not be written.
    fn check_sinks(&mut self) {
        if self.sinks_at_start > 0
            && self.sinks.is_empty()
            && let Some(stop) = self.stop.take()
        {
            tracing::error!("every output failed; stopping the streams");
            stop.fire();
        }
    }

    fn window(&mut self, w: Windowed) {
        let Windowed {
            stream,
            mut event,
            features,
            model,
            started,
        } = w;
        let (sinks, metrics, sums) = (&mut self.sinks, &*self.metrics, &mut self.summaries);
        let mut out = |e: Event| emit(sinks, metrics, sums, e);
        let (Some(small), Some(feats)) = (self.small.get(model), features) else {
            match &mut self.cascade {
                Some(c) => c.pass(stream, event, started, &mut out),
                None => out(stamp(event, started)),
            }
            return;
        };
        let t = Instant::now();
        let verdict = small.score(&feats);
        event.latency_ms.ubm = t.elapsed().as_secs_f64() * 1e3;
        let lane = self.cascade.as_ref().and_then(|c| c.lane_for(model));
        match (&mut self.cascade, lane) {
            // A large model backs this small model (English; a language with its own
            // [[cascade.languages]] entry).
            (Some(c), Some(lane)) => {
                c.submit_to(lane, stream, event, verdict, feats, started, &mut out);
                metrics.queue_depth(c.depth());
            }
            (Some(c), None) => {
                event.set_sentiment(&settle(&verdict, small.band()));
                c.pass(stream, event, started, &mut out);
            }
            (None, _) => {
                event.set_sentiment(&settle(&verdict, small.band()));
                out(stamp(event, started));
            }
        }
    }

    fn poll_cascade(&mut self) {
        let (sinks, metrics, sums) = (&mut self.sinks, &*self.metrics, &mut self.summaries);
        if let Some(c) = &mut self.cascade {
            c.poll(false, &mut |e| emit(sinks, metrics, sums, e));
            metrics.queue_depth(c.depth());
        }
    }

    fn message(&mut self, msg: ToRouter, done: &mut [Option<StreamEnd>]) {
        match msg {
            ToRouter::Window(w) => self.window(*w),
            ToRouter::Status(mut s) => {
                // A notice follows the windows before it (escalated ones included), and
                // is stamped when it leaves, after them.
                self.drain_cascade();
                s.emitted_at_ms = crate::event::now_ms();
                if s.status == StreamStatus::Started {
                    // Stream time `at` is live now: the origin for lag.
                    self.metrics.set_origin(&s.stream, s.at);
                }
                self.metrics.status(&s);
                let summary = (s.status == StreamStatus::Ended)
                    .then(|| self.summaries.ended(&s.stream, s.at, s.reason.is_none()))
                    .flatten();
                if self.notices {
                    self.sinks.write(&Output::Status(s));
                }
                if let Some(summary) = summary {
                    self.sinks.write(&summary);
                }
            }
            ToRouter::Progress {
                stream,
                media_s,
                audio,
                video,
            } => self.metrics.progress(&stream, media_s, audio, video),
            ToRouter::Retrying { stream } => self.metrics.retrying(&stream),
            ToRouter::Done { stream, error } => {
                done[stream] = Some(error.map_or(StreamEnd::Finished, StreamEnd::Failed));
            }
        }
    }

    /// Runs until every one of `streams` stream threads has reported `Done` (or hung up),
    /// then finishes the cascade and closes the sinks. It sleeps until a window, a
    /// large-model reply or a cascade deadline is due: nothing is polled on a timer.
    pub fn run(mut self, rx: Receiver<ToRouter>, streams: usize) -> Finished {
        let mut done: Vec<Option<StreamEnd>> = (0..streams).map(|_| None).collect();
        let never = crossbeam_channel::never();
        while done.iter().any(Option::is_none) {
            let replies = self.cascade.as_ref().and_then(Cascade::replies);
            let replies = replies.unwrap_or(&never).clone();
            let deadline = self.cascade.as_ref().and_then(Cascade::next_deadline);
            let mut sel = Select::new();
            let from_streams = sel.recv(&rx);
            sel.recv(&replies);
            let ready = match deadline {
                Some(d) => sel.ready_deadline(d).ok(),
                None => Some(sel.ready()),
            };
            if ready == Some(from_streams) {
                match rx.try_recv() {
                    Ok(msg) => self.message(msg, &mut done),
                    Err(e) if e.is_disconnected() => break,
                    Err(_) => {}
                }
            }
            // Replies and expired deadlines are applied here.
            self.poll_cascade();
            self.check_sinks();
        }
        self.drain_cascade();
        self.sinks.close();
        Finished {
            streams: done
                .into_iter()
                .map(|d| d.unwrap_or(StreamEnd::Vanished))
                .collect(),
            sink_errors: std::mem::take(&mut self.sinks.errors),
        }
    }

    fn drain_cascade(&mut self) {
        let (sinks, metrics, sums) = (&mut self.sinks, &*self.metrics, &mut self.summaries);
        if let Some(c) = &mut self.cascade {
            c.finish(&mut |e| emit(sinks, metrics, sums, e));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::stream::Windowed;
    use crate::cascade::backend::{Backend, BackendError};
    use crate::cascade::{CascadeSettings, Pool, WhenFull};
    use crate::event::{FallbackReason, Polarity, Stage};
    use crate::models::mllm::Answer;
    use crate::routing::fusion::{Policy, Verdict};
    use crate::sinks::Sink;
    use std::sync::{Arc, Mutex};

    /// A small model that is sure of windows whose first text feature is positive.
    struct FakeSmall;

    impl SmallModel for FakeSmall {
        fn score(&self, f: &WindowFeatures) -> Sentiment {
            let sure = f.text.as_ref().is_some_and(|t| t[0] > 0.0);
            let (probs, u) = if sure {
                ([0.01, 0.01, 0.98], 0.1)
            } else {
                ([0.3, 0.3, 0.4], 1.08)
            };
            Sentiment::small(1.0, Polarity::Positive, probs, u)
        }
        fn band(&self) -> f32 {
            0.1
        }
    }

    /// A large model that always gives one answer (`None`: it always fails).
    struct FakeLarge(Option<Answer>);

    impl Backend for FakeLarge {
        fn judge(
            &mut self,
            _: &str,
            _: &WindowFeatures,
            _: Option<(Verdict, Verdict)>,
        ) -> Result<Answer, BackendError> {
            self.0.ok_or_else(|| BackendError::Failed {
                backend: "fake",
                reason: "injected".into(),
            })
        }
        fn name(&self) -> &'static str {
            "fake"
        }
        fn band(&self) -> f32 {
            0.1
        }
    }

    /// Sure and negative.
    fn negative() -> Option<Answer> {
        Some(Answer {
            score: -2.0,
            probs: [0.98, 0.01, 0.01],
            uncertainty: 0.1,
            prompt_tokens: 0,
        })
    }

    /// Collects what the router writes.
    struct Memory(Arc<Mutex<Vec<Output>>>);

    impl Sink for Memory {
        fn name(&self) -> String {
            "memory".into()
        }
        fn write(&mut self, out: &Output) -> Result<(), SinkError> {
            self.0.lock().unwrap().push(out.clone());
            Ok(())
        }
    }

    fn windowed(stream: usize, seq: u64, sure: bool) -> ToRouter {
        let features = WindowFeatures {
            text: Some(vec![if sure { 1.0 } else { -1.0 }]),
            ..WindowFeatures::default()
        };
        ToRouter::Window(Box::new(Windowed {
            stream,
            event: Event::transcribed(&format!("s{stream}"), seq, seq as f64, seq as f64 + 1.0),
            features: Some(features),
            model: 0,
            started: Instant::now(),
        }))
    }

    fn route(fail: bool, msgs: Vec<ToRouter>, streams: usize) -> (Vec<Event>, Finished) {
        let (out, finished) = route_all(fail, msgs, streams, Summaries::default());
        (windows(&out), finished)
    }

    fn route_all(
        fail: bool,
        msgs: Vec<ToRouter>,
        streams: usize,
        summaries: Summaries,
    ) -> (Vec<Output>, Finished) {
        let pool = Pool::start(
            vec![Box::new(FakeLarge(if fail { None } else { negative() }))],
            4,
            WhenFull::Block,
            0.4,
            Policy::Full,
        );
        let settings = CascadeSettings {
            tau1: 0.5,
            band: 0.1,
            deadline: None,
            max_held: 100,
        };
        let small: Vec<Box<dyn SmallModel>> = vec![Box::new(FakeSmall)];
        let cascade = Cascade::new(pool, settings);
        run_router(small, cascade, summaries, msgs, streams)
    }

    /// Runs a router over `msgs` with the fake models; what it wrote and how it ended.
    fn run_router(
        small: Vec<Box<dyn SmallModel>>,
        cascade: Cascade,
        summaries: Summaries,
        msgs: Vec<ToRouter>,
        streams: usize,
    ) -> (Vec<Output>, Finished) {
        let out = Arc::new(Mutex::new(Vec::new()));
        let mut sinks = Fanout::default();
        sinks.push(Box::new(Memory(out.clone())));
        let metrics = Arc::new(Metrics::default());
        let router =
            Router::new(small, Some(cascade), sinks, metrics, false).summarizing(summaries);
        let (tx, rx) = crossbeam_channel::unbounded();
        for m in msgs {
            tx.send(m).unwrap();
        }
        drop(tx);
        let finished = router.run(rx, streams);
        let outputs = out.lock().unwrap().clone();
        (outputs, finished)
    }

    /// The window events among outputs.
    fn windows(out: &[Output]) -> Vec<Event> {
        out.iter()
            .filter_map(|o| match o {
                Output::Window(e) => Some(e.clone()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn summaries_come_every_period_and_after_the_last_window_at_the_end() {
        let mut msgs: Vec<ToRouter> = (0..5).map(|i| windowed(0, i, i != 2)).collect();
        msgs.push(ToRouter::Status(crate::event::StatusEvent {
            stream: "s0".into(),
            status: StreamStatus::Ended,
            at: 6.0,
            reason: None,
            emitted_at_ms: 0,
        }));
        msgs.push(ToRouter::Done {
            stream: 0,
            error: None,
        });
        let (out, _) = route_all(false, msgs, 1, Summaries::new(2.0));
        let kinds: Vec<String> = out
            .iter()
            .map(|o| match o {
                Output::Window(e) => format!("w{}", e.seq),
                Output::Status(_) => "status".into(),
                Output::Summary(s) => format!(
                    "sum{}{}",
                    s.summary.windows,
                    if s.summary.complete { "!" } else { "" }
                ),
            })
            .collect();
        // Windows end at 1..5 s: partial summaries after the ends 2 s and 4 s; the last,
        // complete, after every window (the escalated one included); no notice (off).
        assert_eq!(
            kinds,
            ["w0", "w1", "sum2", "w2", "w3", "sum4", "w4", "sum5!"]
        );
        let Some(Output::Summary(last)) = out.last() else {
            unreachable!()
        };
        assert_eq!(last.summary.duration_s, 6.0);
        assert_eq!(last.summary.speakers[0].windows, 5);
    }

    #[test]
    fn sure_windows_stay_small_unsure_ones_go_large_in_order() {
        let msgs = vec![
            windowed(0, 0, true),
            windowed(0, 1, false),
            windowed(1, 0, false),
            windowed(0, 2, true),
            ToRouter::Done {
                stream: 0,
                error: None,
            },
            ToRouter::Done {
                stream: 1,
                error: None,
            },
        ];
        let (ev, finished) = route(false, msgs, 2);
        let s0: Vec<(u64, Option<Stage>)> = ev
            .iter()
            .filter(|e| e.stream == "s0")
            .map(|e| (e.seq, e.stage))
            .collect();
        assert_eq!(
            s0,
            vec![
                (0, Some(Stage::Ubm)),
                (1, Some(Stage::Mllm)),
                (2, Some(Stage::Ubm))
            ]
        );
        let large = ev.iter().find(|e| e.stream == "s1").unwrap();
        assert_eq!(large.polarity, Some(Polarity::Negative));
        assert_eq!(large.ubm.unwrap().score, 1.0, "the small opinion is kept");
        assert_eq!(large.mllm.unwrap().score, -2.0);
        assert!(
            finished
                .streams
                .iter()
                .all(|s| matches!(s, StreamEnd::Finished))
        );
    }

    #[test]
    fn a_failing_large_model_falls_back_with_a_typed_reason() {
        let msgs = vec![
            windowed(0, 0, false),
            windowed(0, 1, true),
            ToRouter::Done {
                stream: 0,
                error: None,
            },
        ];
        let (ev, _) = route(true, msgs, 1);
        assert_eq!(ev.len(), 2);
        assert_eq!(ev[0].stage, Some(Stage::UbmFallback));
        assert_eq!(ev[0].fallback_reason, Some(FallbackReason::BackendError));
        assert_eq!(ev[0].score, Some(1.0), "the small verdict stands");
        assert_eq!(ev[1].stage, Some(Stage::Ubm));
    }

    #[test]
    fn a_stream_that_hangs_up_without_done_ends_the_run() {
        // The stream thread died (its sender dropped) before saying Done: the router
        // must not wait forever, and the stream counts as not finished cleanly.
        let (ev, finished) = route(false, vec![windowed(0, 0, true)], 1);
        assert_eq!(ev.len(), 1);
        assert!(matches!(finished.streams[..], [StreamEnd::Vanished]));
    }

    /// Two lanes replying on one channel: model 0's large model says `first`, model 1's
    /// says `second`; model 2 has none.
    fn two_lanes(first: Option<Answer>, second: Option<Answer>) -> Cascade {
        let (tx, rx) = crossbeam_channel::unbounded();
        let lane = |answer: Option<Answer>| {
            let backends: Vec<Box<dyn Backend>> = vec![Box::new(FakeLarge(answer))];
            let replies = (tx.clone(), rx.clone());
            let pool =
                Pool::start_replying(backends, 4, WhenFull::Block, 0.4, Policy::Full, replies);
            let s = CascadeSettings {
                tau1: 0.5,
                band: 0.1,
                deadline: None,
                max_held: 100,
            };
            (pool, s)
        };
        let lanes = vec![lane(first), lane(second)];
        Cascade::with_lanes(lanes, vec![Some(0), Some(1), None])
    }

    #[test]
    fn each_small_model_escalates_to_its_own_large_model_in_stream_order() {
        let positive = Answer {
            score: 2.5,
            probs: [0.01, 0.01, 0.98],
            uncertainty: 0.1,
            prompt_tokens: 0,
        };
        let cascade = two_lanes(negative(), Some(positive));
        assert_eq!(
            (
                cascade.lane_for(1),
                cascade.lane_for(2),
                cascade.lane_for(9)
            ),
            (Some(1), None, None)
        );
        let with_model = |seq: u64, sure: bool, model: usize| {
            let ToRouter::Window(mut w) = windowed(0, seq, sure) else {
                unreachable!()
            };
            w.model = model;
            ToRouter::Window(w)
        };
        let mut msgs: Vec<ToRouter> = [(false, 1), (false, 0), (true, 1), (false, 2), (false, 1)]
            .iter()
            .zip(0..)
            .map(|(&(sure, model), seq)| with_model(seq, sure, model))
            .collect();
        msgs.push(ToRouter::Done {
            stream: 0,
            error: None,
        });
        let small: Vec<Box<dyn SmallModel>> = vec![
            Box::new(FakeSmall),
            Box::new(FakeSmall),
            Box::new(FakeSmall),
        ];
        let (out, _) = run_router(small, cascade, Summaries::default(), msgs, 1);
        let events = windows(&out);
        let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, [0, 1, 2, 3, 4], "stream order across lanes");
        let got: Vec<(Option<Stage>, Option<f32>)> =
            events.iter().map(|e| (e.stage, e.score)).collect();
        assert_eq!(
            got[0],
            (Some(Stage::Mllm), Some(2.5)),
            "model 1's large model"
        );
        assert_eq!(
            got[1],
            (Some(Stage::Mllm), Some(-2.0)),
            "model 0's large model"
        );
        assert_eq!(got[2].0, Some(Stage::Ubm), "sure: accepted");
        assert_eq!(got[3].0, Some(Stage::Ubm), "no large model for model 2");
        assert_eq!(got[4], (Some(Stage::Mllm), Some(2.5)));
    }
}
