//! Large-model benchmark: latency per window (prompt length, ms), worker throughput with 1
//! and 2 threads, and queue behaviour under overload (escalations offered faster than they
//! are served). Prints numbers; asserts only that no event is lost and order holds.
//!
//! Run: `cargo bench --bench cascade` (after scripts/setup). Uses the bundled
//! samples/dataset clips and the installed SmolLM2 + committed adapter.

use std::path::Path;
use std::time::{Duration, Instant};

use sentistream::cascade::backend::{Backend, LocalBackend};
use sentistream::cascade::{Cascade, CascadeSettings, Pool, WhenFull};
use sentistream::event::{Event, FallbackReason, Polarity, Sentiment, Stage};
use sentistream::features::text::EncoderKind;
use sentistream::models::mllm::{Mllm, Query};
use sentistream::routing::fusion::{Policy, Verdict};
use sentistream::train::dataset::{ClipCut, Dataset, Extraction, Scale, Split, TextSource};
use sentistream::train::trainer::{SplitData, load_split};

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn event(seq: u64, text: &str) -> Event {
    let mut e = Event::transcribed("bench", seq, seq as f64, seq as f64 + 1.0);
    e.text = text.into();
    e
}

/// An unsure small-model verdict (every window escalates).
fn unsure() -> Sentiment {
    Sentiment::small(0.5, Polarity::Positive, [0.3, 0.3, 0.4], 1.0)
}

/// Offers every window (all escalated: tau1 below any uncertainty) `gap` apart; returns
/// (events, wall seconds).
fn offer_all(
    backends: Vec<Box<dyn Backend>>,
    data: &SplitData,
    rounds: usize,
    queue: usize,
    when_full: WhenFull,
    gap: Duration,
) -> (Vec<Event>, f64) {
    let pool = Pool::start(backends, queue, when_full, 0.3, Policy::Full);
    let mut c = Cascade::new(
        pool,
        CascadeSettings {
            tau1: -1.0,
            band: 0.1,
            deadline: None,
            max_held: 10_000,
        },
    );
    let mut out = Vec::new();
    let t = Instant::now();
    let n = data.feats.len();
    for k in 0..rounds * n {
        let i = k % n;
        c.submit(
            0,
            event(k as u64, &data.texts[i]),
            unsure(),
            data.feats[i].clone(),
            Instant::now(),
            &mut |e| out.push(e),
        );
        std::thread::sleep(gap);
    }
    c.finish(&mut |e| out.push(e));
    let wall = t.elapsed().as_secs_f64();
    let seqs: Vec<u64> = out.iter().map(|e| e.seq).collect();
    assert_eq!(
        seqs,
        (0..(rounds * n) as u64).collect::<Vec<_>>(),
        "lost or reordered events"
    );
    (out, wall)
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let models = std::env::var_os("SENTISTREAM_MODELS")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| root.join("models"));
    let gguf = models.join("SmolLM2-135M-Instruct.Q4_1.gguf");
    let adapter = models.join("mllm-adapter");
    if !gguf.is_file() {
        eprintln!("SKIPPED: {} missing; run scripts/setup", gguf.display());
        return;
    }
    let ds = Dataset::open(&root.join("samples/dataset"), Scale::Mosi).expect("sample dataset");
    // Each clip cut as annotate serves it (default segmenter settings).
    let cut = ClipCut {
        segment: sentistream::config::SegmentConfig::default(),
        vad: models.join(sentistream::assets::VAD_FILE),
    };
    let minilm = sentistream::features::text::EncoderSpec::plain(EncoderKind::MiniLm);
    let how = Extraction {
        cut: &cut,
        text: TextSource::Given,
        models_dir: &models,
        asr: None,
        encoder: &minilm,
    };
    let split = |s| load_split(&ds, s, how, 2);
    let mut data = split(Split::Train).expect("features");
    for s in [Split::Valid, Split::Test] {
        let d = split(s).expect("features");
        data.feats.extend(d.feats);
        data.texts.extend(d.texts);
        data.labels.extend(d.labels);
    }
    let t = Instant::now();
    let model = Mllm::load(&gguf, &adapter).expect("large model");
    println!(
        "large model loaded in {:.2} s ({} windows)",
        t.elapsed().as_secs_f64(),
        data.feats.len()
    );

    // 1. Latency per window at batch 1 (first pass and cross-verification pass).
    tch::set_num_threads(2);
    let _g = tch::no_grad_guard();
    let q = |i: usize, earlier| Query {
        text: &data.texts[i],
        features: &data.feats[i],
        earlier,
    };
    model.judge(&q(0, None)).expect("warm-up");
    let (mut first, mut cross, mut tokens, mut ctokens) = (vec![], vec![], vec![], vec![]);
    let earlier = Some((
        Verdict {
            score: 1.2,
            uncertainty: 0.8,
        },
        Verdict {
            score: -0.9,
            uncertainty: 0.9,
        },
    ));
    for i in 0..data.feats.len() {
        let t = Instant::now();
        let a = model.judge(&q(i, None)).expect("judge");
        first.push(t.elapsed().as_secs_f64() * 1e3);
        tokens.push(a.prompt_tokens as f64);
        let t = Instant::now();
        let a = model.judge(&q(i, earlier)).expect("judge");
        cross.push(t.elapsed().as_secs_f64() * 1e3);
        ctokens.push(a.prompt_tokens as f64);
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    println!(
        "\nlarge-model latency per window (batch 1, 2 torch threads, cached {}-token prefix):",
        model.prefix_tokens()
    );
    println!("| pass | prompt tokens (mean) | mean ms | p50 ms | p95 ms |\n|---|---|---|---|---|");
    for (name, v, tk) in [
        ("first", &mut first, &tokens),
        ("cross-verification", &mut cross, &ctokens),
    ] {
        let m = mean(v);
        println!(
            "| {name} | {:.1} | {m:.1} | {:.1} | {:.1} |",
            mean(tk),
            pct(v, 0.5),
            pct(v, 0.95)
        );
    }

    // 2. Throughput with 1 and 2 worker threads (each its own model), queue blocking.
    println!(
        "\nworker throughput (every window escalated, block policy, 3 rounds of the windows):"
    );
    println!(
        "| workers | torch threads each | windows | wall s | windows/s | passes |\n|---|---|---|---|---|---|"
    );
    for workers in [1usize, 2] {
        tch::set_num_threads((2 / workers).max(1) as i32);
        let backends: Vec<Box<dyn Backend>> = (0..workers)
            .map(|_| {
                Box::new(LocalBackend::new(
                    Mllm::load(&gguf, &adapter).expect("model"),
                )) as Box<dyn Backend>
            })
            .collect();
        let (ev, wall) = offer_all(backends, &data, 3, 8, WhenFull::Block, Duration::ZERO);
        let passes: usize = ev
            .iter()
            .map(|e| match e.stage {
                Some(Stage::CrossVerified) => 2,
                Some(Stage::UbmFallback) => 0,
                _ => 1,
            })
            .sum();
        println!(
            "| {workers} | {} | {} | {wall:.2} | {:.2} | {passes} |",
            (2 / workers).max(1),
            ev.len(),
            ev.len() as f64 / wall
        );
    }

    // 3. Overload: one worker, queue of 2, drop_newest, windows offered every 20 ms.
    tch::set_num_threads(2);
    let backends: Vec<Box<dyn Backend>> = vec![Box::new(LocalBackend::new(
        Mllm::load(&gguf, &adapter).expect("model"),
    ))];
    let (ev, wall) = offer_all(
        backends,
        &data,
        3,
        2,
        WhenFull::DropNewest,
        Duration::from_millis(20),
    );
    let count = |f: &dyn Fn(&Event) -> bool| ev.iter().filter(|e| f(e)).count();
    println!(
        "\noverload (1 worker, queue 2, drop_newest, one escalation every 20 ms): offered {}, served {}, fallbacks queue_full {}, other fallbacks {}, emitted {} in order, wall {wall:.2} s",
        ev.len(),
        count(&|e| !matches!(e.stage, Some(Stage::UbmFallback))),
        count(&|e| e.fallback_reason == Some(FallbackReason::QueueFull)),
        count(&|e| e.stage == Some(Stage::UbmFallback)
            && e.fallback_reason != Some(FallbackReason::QueueFull)),
        ev.len()
    );
    let mut lat: Vec<f64> = ev.iter().map(|e| e.latency_ms.total).collect();
    println!(
        "event latency under overload: p50 {:.0} ms, p95 {:.0} ms, max {:.0} ms (bounded by queue 2 x service time)",
        pct(&mut lat, 0.5),
        pct(&mut lat, 0.95),
        pct(&mut lat, 1.0)
    );
}
