//! Feature cost per window (not a test: it prints numbers). Decodes a clip, cuts it into
//! windows at the times its script gives (samples/call.json by scripts/make-call), and
//! times each feature stage per window: audio, faces (detector on every frame vs every
//! `DETECT_EVERY`th with tracking, and how far the two disagree), the text encoder, and
//! the streaming VAD per 32 ms chunk.
//!
//!   cargo run --release --example bench_features [samples/call.mp4]

use std::path::Path;
use std::time::Instant;

use sentistream::config::SourceConfig;
use sentistream::features::audio::AudioFeaturizer;
use sentistream::features::text::TextEncoder;
use sentistream::features::visual::{DETECT_EVERY, VIS_DIM, VisualFeaturizer, VisualModels};
use sentistream::source::decode_all;

fn main() {
    let clip = std::env::args().nth(1).unwrap_or("samples/call.mp4".into());
    let script = Path::new(&clip).with_extension("json");
    let script: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&script).expect("the clip's .json script"))
            .expect("JSON script");
    let turns = script["turns"]
        .as_array()
        .or(script["sentences"].as_array())
        .expect("turns or sentences")
        .clone();
    let models = sentistream::assets::ModelFiles::new("models");
    let (audio, frames) = decode_all(Path::new(&clip), &SourceConfig::default()).expect("decode");
    let mut af = AudioFeaturizer::new();
    let mut every = VisualFeaturizer::load(&VisualModels::installed(&models.dir)).expect("faces");
    every.set_detect_every(1);
    let mut tracked = VisualFeaturizer::load(&VisualModels::installed(&models.dir)).expect("faces");
    let text = TextEncoder::load(&models.minilm()).expect("MiniLM");
    let e5 = TextEncoder::open(
        sentistream::features::text::EncoderKind::E5Small,
        &models.dir,
    )
    .expect("multilingual-e5-small");
    let (mut t_audio, mut t_every, mut t_tracked, mut t_text) = (0.0, 0.0, 0.0, 0.0);
    let mut t_e5 = 0.0;
    let (mut n_frames, mut diff, mut present_every, mut present_tracked) = (0usize, 0.0f64, 0, 0);
    let (mut va, mut vb, mut out) = (Vec::new(), Vec::new(), Vec::new());
    for t in &turns {
        let (s, e) = (
            t["start"].as_f64().unwrap() - 0.2,
            t["end"].as_f64().unwrap() + 0.2,
        );
        let (a, b) = (
            (s.max(0.0) * 16000.0) as usize,
            ((e * 16000.0) as usize).min(audio.len()),
        );
        let clock = Instant::now();
        out.clear();
        af.compute(&audio[a..b], &mut out);
        t_audio += clock.elapsed().as_secs_f64();
        let win: Vec<_> = frames.iter().filter(|f| f.pts >= s && f.pts < e).collect();
        n_frames += win.len();
        for (fx, v, time) in [
            (&mut every, &mut va, &mut t_every),
            (&mut tracked, &mut vb, &mut t_tracked),
        ] {
            let clock = Instant::now();
            fx.reset();
            v.clear();
            for f in &win {
                fx.frame(&f.data, f.width, f.height, v).expect("frame");
            }
            *time += clock.elapsed().as_secs_f64();
        }
        for (x, y) in va.chunks(VIS_DIM).zip(vb.chunks(VIS_DIM)) {
            present_every += (x[0] > 0.0) as usize;
            present_tracked += (y[0] > 0.0) as usize;
            // centre and size disagreement, in frame widths
            diff += ((x[2] - y[2]).abs() + (x[3] - y[3]).abs() + (x[4] - y[4]).abs()) as f64;
        }
        let clock = Instant::now();
        text.encode_one(t["text"].as_str().unwrap())
            .expect("encode");
        t_text += clock.elapsed().as_secs_f64();
        let clock = Instant::now();
        e5.encode_one(t["text"].as_str().unwrap()).expect("encode");
        t_e5 += clock.elapsed().as_secs_f64();
    }
    let mut vad =
        sentistream::segment::silero::Silero::load(&models.dir.join(sentistream::assets::VAD_FILE))
            .expect("Silero");
    let clock = Instant::now();
    let chunks = audio
        .chunks(sentistream::segment::silero::CHUNK)
        .map(|c| vad.chunk(c))
        .count();
    let t_vad = clock.elapsed().as_secs_f64();
    let n = turns.len() as f64;
    println!(
        "{clip}: {} windows, {n_frames} frames at 5 fps",
        turns.len()
    );
    println!(
        "  audio features        {:6.1} ms per window",
        1e3 * t_audio / n
    );
    println!(
        "  faces, every frame    {:6.1} ms per window ({:.1} ms per frame), face in {present_every}/{n_frames} frames",
        1e3 * t_every / n,
        1e3 * t_every / n_frames as f64
    );
    println!(
        "  faces, every {DETECT_EVERY}th+track {:6.1} ms per window ({:.1} ms per frame), face in {present_tracked}/{n_frames} frames, mean |centre/size| difference {:.4} frame widths",
        1e3 * t_tracked / n,
        1e3 * t_tracked / n_frames as f64,
        diff / n_frames as f64
    );
    println!(
        "  text encoder          {:6.1} ms per window (MiniLM), {:.1} ms (multilingual-e5-small)",
        1e3 * t_text / n,
        1e3 * t_e5 / n
    );
    println!(
        "  streaming VAD         {:6.3} ms per 32 ms chunk ({chunks} chunks), {:.4} s per second of audio",
        1e3 * t_vad / chunks as f64,
        t_vad / (audio.len() as f64 / 16000.0)
    );
}
