//! Self-contained HTML reports of annotated calls (no scripts, no external files): each
//! speaker's sentiment over time as an SVG chart, the summary, and the transcript
//! coloured by polarity; and an index page for a batch.
//!
//! Input is what the outputs hold: the events as JSON values (the `.jsonl` lines) and
//! the call summary (the `summary` object of a summary event), so a report can be made
//! again from the files alone.

use std::fmt::Write;

use serde_json::Value;

/// Chart size, pixels.
const W: f64 = 900.0;
const H: f64 = 220.0;
const PAD: f64 = 36.0;
/// Colours per speaker (cycled).
const SPEAKER_COLOURS: [&str; 6] = [
    "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf",
];

/// Escapes text for HTML.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

fn f(v: &Value, k: &str) -> Option<f64> {
    v.get(k).and_then(Value::as_f64)
}

fn speaker_of(e: &Value) -> &str {
    e.get("speaker").and_then(Value::as_str).unwrap_or("all")
}

/// Background colour of a transcript line for a polarity.
fn polarity_colour(p: Option<&str>) -> &'static str {
    match p {
        Some("positive") => "#e3f4e1",
        Some("negative") => "#fbe3e1",
        Some("neutral") => "#eef0f3",
        _ => "#ffffff",
    }
}

fn fmt_opt(v: Option<f64>) -> String {
    v.map_or("–".into(), |x| format!("{x:+.2}"))
}

/// Four quarter means as `+0.12 / – / ...`.
fn quarters(v: Option<&Value>) -> String {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|q| fmt_opt(q.as_f64()))
                .collect::<Vec<_>>()
                .join(" / ")
        })
        .unwrap_or_default()
}

fn mmss(t: f64) -> String {
    let t = t.max(0.0).round() as u64;
    format!("{}:{:02}", t / 60, t % 60)
}

/// The SVG chart: one polyline per speaker of score against window midpoint.
fn chart(events: &[&Value], speakers: &[String], duration: f64, limit: f64) -> String {
    let x = |t: f64| PAD + (W - 2.0 * PAD) * (t / duration.max(1e-6));
    let y = |s: f64| H / 2.0 - (H / 2.0 - PAD / 2.0) * (s / limit).clamp(-1.0, 1.0);
    let mut svg = format!(
        "<svg class=\"chart\" viewBox=\"0 0 {W} {H}\" width=\"{W}\" height=\"{H}\" role=\"img\" aria-label=\"sentiment over time\">"
    );
    let _ = write!(
        svg,
        "<rect x=\"0\" y=\"0\" width=\"{W}\" height=\"{H}\" fill=\"#fafafa\"/><line x1=\"{PAD}\" y1=\"{0}\" x2=\"{1}\" y2=\"{0}\" stroke=\"#999\" stroke-dasharray=\"4 3\"/>",
        H / 2.0,
        W - PAD
    );
    for s in [limit, 0.0, -limit] {
        let _ = write!(
            svg,
            "<text x=\"6\" y=\"{:.1}\" font-size=\"12\" fill=\"#666\">{}</text>",
            y(s) + 4.0,
            if s == 0.0 {
                "0".to_string()
            } else {
                format!("{s:+}")
            }
        );
    }
    for q in 1..4 {
        let qx = x(duration * q as f64 / 4.0);
        let _ = write!(
            svg,
            "<line x1=\"{qx:.1}\" y1=\"{:.1}\" x2=\"{qx:.1}\" y2=\"{:.1}\" stroke=\"#ddd\"/>",
            PAD / 2.0,
            H - PAD / 2.0
        );
    }
    for (i, sp) in speakers.iter().enumerate() {
        let colour = SPEAKER_COLOURS[i % SPEAKER_COLOURS.len()];
        let pts: Vec<(f64, f64)> = events
            .iter()
            .filter(|e| speaker_of(e) == sp)
            .filter_map(|e| {
                let mid = (f(e, "start")? + f(e, "end")?) / 2.0;
                Some((x(mid), y(f(e, "score")?)))
            })
            .collect();
        let line: Vec<String> = pts.iter().map(|(a, b)| format!("{a:.1},{b:.1}")).collect();
        let _ = write!(
            svg,
            "<polyline data-speaker=\"{}\" points=\"{}\" fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\"/>",
            esc(sp),
            line.join(" ")
        );
        for (a, b) in pts {
            let _ = write!(
                svg,
                "<circle cx=\"{a:.1}\" cy=\"{b:.1}\" r=\"4\" fill=\"{colour}\"/>"
            );
        }
    }
    let _ = write!(
        svg,
        "<text x=\"{PAD}\" y=\"{:.1}\" font-size=\"12\" fill=\"#666\">0:00</text><text x=\"{:.1}\" y=\"{:.1}\" font-size=\"12\" fill=\"#666\" text-anchor=\"end\">{}</text></svg>",
        H - 4.0,
        W - PAD,
        H - 4.0,
        mmss(duration)
    );
    svg
}

/// The summary tables (call and per speaker).
fn summary_html(s: &Value) -> String {
    let mut h = String::new();
    let _ = write!(
        h,
        "<table class=\"summary\"><tr><th>duration</th><td>{}</td><th>speech</th><td>{:.0} s</td><th>silence</th><td>{:.0}%</td></tr>\
         <tr><th>windows</th><td>{}</td><th>overlaps</th><td>{}</td><th>interruptions</th><td>{}</td></tr>\
         <tr><th>sentiment by quarter</th><td colspan=\"3\">{}</td><th>trend</th><td id=\"trend\">{} ({})</td></tr></table>",
        mmss(f(s, "duration_s").unwrap_or(0.0)),
        f(s, "speech_s").unwrap_or(0.0),
        f(s, "silence_share").unwrap_or(0.0) * 100.0,
        s["windows"].as_u64().unwrap_or(0),
        s["overlaps"].as_u64().unwrap_or(0),
        s["interruptions"].as_u64().unwrap_or(0),
        quarters(s.get("quarters")),
        esc(s["trend_word"].as_str().unwrap_or("unknown")),
        fmt_opt(f(s, "trend")),
    );
    h.push_str("<table class=\"speakers\"><tr><th>speaker</th><th>talk time</th><th>share</th><th>turns</th><th>mean</th><th>min</th><th>max</th><th>by quarter</th></tr>");
    for (i, sp) in s["speakers"].as_array().into_iter().flatten().enumerate() {
        let _ = write!(
            h,
            "<tr><td><span class=\"dot\" style=\"background:{}\"></span>{}</td><td>{:.1} s</td><td>{:.0}%</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            SPEAKER_COLOURS[i % SPEAKER_COLOURS.len()],
            esc(sp["speaker"].as_str().unwrap_or("")),
            f(sp, "talk_s").unwrap_or(0.0),
            f(sp, "talk_share").unwrap_or(0.0) * 100.0,
            sp["turns"].as_u64().unwrap_or(0),
            fmt_opt(f(sp, "mean_score")),
            fmt_opt(f(sp, "min_score")),
            fmt_opt(f(sp, "max_score")),
            quarters(sp.get("quarters")),
        );
    }
    h.push_str("</table>");
    let moments = s["most_negative"].as_array().cloned().unwrap_or_default();
    if !moments.is_empty() {
        h.push_str("<h3>Most negative moments</h3><ol class=\"moments\">");
        for m in moments {
            let _ = write!(
                h,
                "<li>{} {} ({:+.2}): {}</li>",
                mmss(f(&m, "start").unwrap_or(0.0)),
                esc(m["speaker"].as_str().unwrap_or("")),
                f(&m, "score").unwrap_or(0.0),
                esc(m["text"].as_str().unwrap_or(""))
            );
        }
        h.push_str("</ol>");
    }
    h
}

const STYLE: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222;max-width:960px}\
h1{font-size:20px}table{border-collapse:collapse;margin:8px 0}th,td{padding:3px 8px;border:1px solid #ddd;text-align:left}\
th{background:#f3f3f3;font-weight:600}.dot{display:inline-block;width:10px;height:10px;border-radius:5px;margin-right:6px}\
.line{padding:3px 8px;margin:2px 0;border-radius:4px}.line .t{color:#666;font-variant-numeric:tabular-nums;margin-right:8px}\
.line .s{font-weight:600;margin-right:8px}.legend span{margin-right:14px}";

/// One call's page. `limit`: the score range drawn (±limit).
pub fn call_page(title: &str, events: &[Value], summary: &Value, limit: f64) -> String {
    let mut windows: Vec<&Value> = events.iter().filter(|e| e.get("seq").is_some()).collect();
    // Channel streams arrive interleaved by processing; the page reads in call order.
    windows.sort_by(|a, b| {
        f(a, "start")
            .unwrap_or(0.0)
            .total_cmp(&f(b, "start").unwrap_or(0.0))
    });
    let speakers: Vec<String> = summary["speakers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["speaker"].as_str().map(String::from))
        .collect();
    let duration = f(summary, "duration_s").unwrap_or(0.0).max(
        windows
            .iter()
            .filter_map(|e| f(e, "end"))
            .fold(0.0, f64::max),
    );
    let mut h = format!(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{0}</title><style>{STYLE}</style></head><body><h1>{0}</h1>",
        esc(title)
    );
    h.push_str("<div class=\"legend\">");
    for (i, sp) in speakers.iter().enumerate() {
        let _ = write!(
            h,
            "<span><span class=\"dot\" style=\"background:{}\"></span>{}</span>",
            SPEAKER_COLOURS[i % SPEAKER_COLOURS.len()],
            esc(sp)
        );
    }
    h.push_str("</div>");
    h.push_str(&chart(&windows, &speakers, duration, limit));
    h.push_str(&summary_html(summary));
    h.push_str("<h2>Transcript</h2><div class=\"transcript\">");
    for e in &windows {
        let score = f(e, "score");
        let _ = write!(
            h,
            "<div class=\"line\" data-polarity=\"{}\" style=\"background:{}\"><span class=\"t\">{}</span><span class=\"s\">{} {}</span>{}</div>",
            esc(e["polarity"].as_str().unwrap_or("none")),
            polarity_colour(e["polarity"].as_str()),
            mmss(f(e, "start").unwrap_or(0.0)),
            esc(speaker_of(e)),
            fmt_opt(score),
            esc(e["text"]
                .as_str()
                .filter(|t| !t.is_empty())
                .unwrap_or("(no speech recognised)"))
        );
    }
    h.push_str("</div></body></html>\n");
    h
}

/// A batch's index: one row per call with a link to its page (`None`: a call that
/// failed, with its error).
pub fn index_page(title: &str, rows: &[(String, Option<String>, Result<Value, String>)]) -> String {
    let mut h = format!(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{0}</title><style>{STYLE}</style></head><body><h1>{0}</h1><table class=\"calls\"><tr><th>call</th><th>duration</th><th>windows</th><th>mean by quarter</th><th>trend</th><th>status</th></tr>",
        esc(title)
    );
    for (call, page, summary) in rows {
        let name = match page {
            Some(p) => format!("<a href=\"{}\">{}</a>", esc(p), esc(call)),
            None => esc(call),
        };
        match summary {
            Ok(s) => {
                let q = quarters(s.get("quarters"));
                let _ = write!(
                    h,
                    "<tr><td>{name}</td><td>{}</td><td>{}</td><td>{q}</td><td>{}</td><td>ok</td></tr>",
                    mmss(f(s, "duration_s").unwrap_or(0.0)),
                    s["windows"].as_u64().unwrap_or(0),
                    esc(s["trend_word"].as_str().unwrap_or("unknown"))
                );
            }
            Err(e) => {
                let _ = write!(
                    h,
                    "<tr class=\"error\"><td>{name}</td><td colspan=\"4\">{}</td><td>error</td></tr>",
                    esc(e)
                );
            }
        }
    }
    h.push_str("</table></body></html>\n");
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_page_has_the_chart_the_summary_and_the_escaped_transcript() {
        let events = vec![
            json!({"stream":"c","seq":0,"start":0.0,"end":4.0,"text":"Hello <there>","score":1.2,"polarity":"positive"}),
            json!({"stream":"c","status":"ended","at":10.0}),
            json!({"stream":"c","seq":1,"start":5.0,"end":9.0,"text":"","score":-2.0,"polarity":"negative"}),
        ];
        let summary = json!({"duration_s":10.0,"speech_s":8.0,"silence_share":0.2,"windows":2,
            "overlaps":0,"interruptions":0,"quarters":[1.2,null,-2.0,null],"trend":-3.2,
            "trend_word":"worsened","speakers":[{"speaker":"all","talk_s":8.0,"talk_share":1.0,
            "turns":1,"mean_score":-0.4,"min_score":-2.0,"max_score":1.2,"quarters":[1.2,null,-2.0,null]}],
            "most_negative":[{"start":5.0,"end":9.0,"speaker":"all","score":-2.0,"text":"It's <bad>"}]});
        let page = call_page("call & co", &events, &summary, 3.0);
        assert!(page.starts_with("<!DOCTYPE html>"));
        assert!(page.contains("<title>call &amp; co</title>"));
        assert!(page.contains("Hello &lt;there&gt;"));
        assert!(page.contains("It&#39;s &lt;bad&gt;"));
        assert!(page.contains("(no speech recognised)"));
        assert!(page.contains("worsened (-3.20)"));
        assert_eq!(page.matches("<circle").count(), 2, "one point per window");
        assert_eq!(
            page.matches("class=\"line\"").count(),
            2,
            "notices are not lines"
        );
        assert!(!page.contains("<script"), "self-contained, no scripts");
        let index = index_page(
            "batch",
            &[
                ("a".into(), Some("a.html".into()), Ok(summary)),
                ("b".into(), None, Err("file b.mp4: not media".into())),
            ],
        );
        assert!(index.contains("<a href=\"a.html\">a</a>"));
        assert!(index.contains("file b.mp4: not media"));
    }
}
