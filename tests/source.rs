//! The GStreamer source on real media: sample counts, frame sizes, stream-time stamps.

mod common;

use sentistream::config::SourceConfig;
use sentistream::source::{SAMPLE_RATE, Source, SourceMsg};

#[test]
fn sample_decodes_to_16k_mono_and_5fps_rgb_with_stream_time() {
    let sample = common::repo("samples/sample.mp4");
    let truth: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(common::repo("samples/sample.json")).unwrap(),
    )
    .unwrap();
    let duration = truth["duration"].as_f64().unwrap();
    let src = Source::open(sample.to_str().unwrap(), &SourceConfig::default()).unwrap();
    let (mut samples, mut frames, mut last_pts, mut first_audio_pts) =
        (0usize, 0usize, -1.0f64, None);
    let mut streams = None;
    loop {
        match src.recv() {
            SourceMsg::Audio { pts, samples: s } => {
                first_audio_pts.get_or_insert(pts);
                samples += s.len();
                src.recycle_audio(s);
            }
            SourceMsg::Video(f) => {
                assert_eq!(f.width, 320);
                assert!(f.height > 100 && f.height < 320, "height {}", f.height);
                assert_eq!(f.data.len(), (f.width * f.height * 3) as usize);
                assert!(f.pts > last_pts, "frame times increase");
                last_pts = f.pts;
                frames += 1;
                src.recycle_frame(f.data);
            }
            SourceMsg::StreamsKnown {
                has_audio,
                has_video,
            } => streams = Some((has_audio, has_video)),
            SourceMsg::VideoEnd => {}
            SourceMsg::Eos => break,
            SourceMsg::Error(e) => panic!("{e}"),
        }
    }
    assert_eq!(streams, Some((true, true)));
    let secs = samples as f64 / SAMPLE_RATE as f64;
    assert!(
        (secs - duration).abs() < 0.2,
        "decoded {secs} s of audio, expected {duration}"
    );
    assert!(
        (frames as f64 - duration * 5.0).abs() <= 3.0,
        "{frames} frames at 5 fps for {duration} s"
    );
    assert!(
        first_audio_pts.flatten().unwrap() < 0.1,
        "audio starts at stream time 0"
    );
    assert!(
        last_pts > duration - 0.5,
        "frame times are stream time, last {last_pts}"
    );
}

#[test]
fn test_source_via_uri_with_other_frame_rate() {
    // A URI input and a configured frame rate; the file is made by a real GStreamer pipeline.
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bars.mp4");
    common::make_media(
        "videotestsrc num-buffers=60 ! video/x-raw,width=160,height=120,framerate=30/1 ! x264enc ! m. \
         audiotestsrc num-buffers=100 ! audioconvert ! avenc_aac ! aacparse ! mp4mux name=m",
        &p,
    );
    let uri = format!("file://{}", p.display());
    let cfg = SourceConfig {
        video_fps: 10,
        video_width: 80,
        ..SourceConfig::default()
    };
    let src = Source::open(&uri, &cfg).unwrap();
    let mut frames = 0;
    loop {
        match src.recv() {
            SourceMsg::Video(f) => {
                assert_eq!((f.width, f.height), (80, 60));
                frames += 1;
            }
            SourceMsg::Eos => break,
            SourceMsg::Error(e) => panic!("{e}"),
            _ => {}
        }
    }
    assert!((19..=21).contains(&frames), "2 s at 10 fps, got {frames}");
}
