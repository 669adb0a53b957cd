//! Latency histograms, the JSON run summary, the SVG chart and merging of
//! summaries written by cooperating processes.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context, Result};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Highest trackable latency: one hour, in microseconds.
const MAX_US: u64 = 3_600_000_000;

/// An empty latency histogram: 1 µs .. 1 h with 3 significant figures.
#[allow(
    clippy::expect_used,
    reason = "constant bounds within hdrhistogram's rules (1 <= low, 2 * low <= high, \
              sigfig <= 5): creation cannot fail, and there is no infallible constructor"
)]
pub fn new_hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_US, 3).expect("static histogram bounds are valid")
}

pub fn record(h: &mut Histogram<u64>, us: u64) {
    h.saturating_record(us.clamp(1, MAX_US));
}

/// A histogram shared by many tasks; tasks record into a [`LocalBatch`] which
/// flushes here in batches to keep lock traffic low.
#[derive(Default)]
pub struct LatencySink {
    h: Mutex<Option<Histogram<u64>>>,
}

impl LatencySink {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            h: Mutex::new(Some(new_hist())),
        })
    }

    pub fn record_many(&self, vals: &[u64]) {
        if let Ok(mut g) = self.h.lock() {
            if let Some(h) = g.as_mut() {
                for &v in vals {
                    record(h, v);
                }
            }
        }
    }

    pub fn snapshot(&self) -> Histogram<u64> {
        self.h
            .lock()
            .ok()
            .and_then(|g| g.clone())
            .unwrap_or_else(new_hist)
    }

    /// p50 and p99 so far (0 when empty), for live display.
    pub fn p50_p99(&self) -> (u64, u64) {
        self.h
            .lock()
            .ok()
            .and_then(|g| {
                g.as_ref()
                    .filter(|h| !h.is_empty())
                    .map(|h| (h.value_at_quantile(0.5), h.value_at_quantile(0.99)))
            })
            .unwrap_or((0, 0))
    }
}

pub struct LocalBatch {
    buf: Vec<u64>,
    sink: Arc<LatencySink>,
    last_flush: std::time::Instant,
}

impl LocalBatch {
    const N: usize = 64;

    pub fn new(sink: Arc<LatencySink>) -> Self {
        Self {
            buf: Vec::with_capacity(Self::N),
            sink,
            last_flush: std::time::Instant::now(),
        }
    }

    pub fn record(&mut self, us: u64) {
        self.buf.push(us);
        if self.buf.len() >= Self::N
            || self.last_flush.elapsed() >= std::time::Duration::from_millis(250)
        {
            self.flush();
        }
    }

    pub fn flush(&mut self) {
        if !self.buf.is_empty() {
            self.sink.record_many(&self.buf);
            self.buf.clear();
        }
        self.last_flush = std::time::Instant::now();
    }
}

impl Drop for LocalBatch {
    fn drop(&mut self) {
        self.flush();
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct LatencyStats {
    pub count: u64,
    pub min: u64,
    pub mean: f64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
}

impl LatencyStats {
    pub fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        Self {
            count: h.len(),
            min: h.min(),
            mean: (h.mean() * 10.0).round() / 10.0,
            p50: h.value_at_quantile(0.50),
            p90: h.value_at_quantile(0.90),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
        }
    }
}

/// One latency distribution of a run, in microseconds.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct LatencyBlock {
    /// What was measured.
    pub what: String,
    pub stats_us: LatencyStats,
    /// Lossless dump of the histogram: `[value_us, count]` pairs (used by `merge`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub histogram_us: Vec<(u64, u64)>,
}

impl LatencyBlock {
    pub fn new(what: &str, h: &Histogram<u64>) -> Self {
        Self {
            what: what.to_string(),
            stats_us: LatencyStats::of(h),
            histogram_us: h
                .iter_recorded()
                .map(|v| (v.value_iterated_to(), v.count_at_value()))
                .collect(),
        }
    }

    pub fn to_hist(&self) -> Histogram<u64> {
        let mut h = new_hist();
        for &(v, c) in &self.histogram_us {
            let _ = h.record_n(v.clamp(1, MAX_US), c);
        }
        h
    }
}

#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct Summary {
    pub tool: String,
    pub kind: String,
    pub scenario: String,
    pub url: String,
    pub started_at: String,
    pub finished_at: String,
    pub process_index: u32,
    pub process_count: u32,
    /// The effective options of the run.
    pub params: serde_json::Value,
    /// Length of the measurement window.
    pub duration_secs: f64,
    pub counters: BTreeMap<String, u64>,
    /// `rates[name] = counters[rate_basis[name]] / duration_secs`.
    pub rates: BTreeMap<String, f64>,
    pub rate_basis: BTreeMap<String, String>,
    /// Name of the latency block charted in the SVG.
    pub primary_latency: String,
    pub latency: BTreeMap<String, LatencyBlock>,
    #[serde(default)]
    pub checks: BTreeMap<String, serde_json::Value>,
    /// Anything that went wrong (errors, failures, order violations); `--strict`
    /// makes the process exit with status 3 when this is not empty.
    #[serde(default)]
    pub problems: Vec<String>,
    /// True when the run achieved nothing at all (exit status 2).
    #[serde(default)]
    pub nothing_worked: bool,
    #[serde(default)]
    pub notes: Vec<String>,
    #[serde(default)]
    pub errors_sample: Vec<String>,
    #[serde(default)]
    pub files: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub merged_from: Vec<String>,
}

impl Summary {
    pub fn new(kind: &str, scenario: &str, url: &str, params: serde_json::Value) -> Self {
        Self {
            tool: format!("echo-load {}", env!("CARGO_PKG_VERSION")),
            kind: kind.into(),
            scenario: scenario.into(),
            url: url.into(),
            started_at: crate::common::rfc3339_now(),
            finished_at: String::new(),
            process_index: 0,
            process_count: 1,
            params,
            duration_secs: 0.0,
            counters: BTreeMap::new(),
            rates: BTreeMap::new(),
            rate_basis: BTreeMap::new(),
            primary_latency: String::new(),
            latency: BTreeMap::new(),
            checks: BTreeMap::new(),
            problems: Vec::new(),
            nothing_worked: false,
            notes: Vec::new(),
            errors_sample: Vec::new(),
            files: BTreeMap::new(),
            merged_from: Vec::new(),
        }
    }

    pub fn counter(&mut self, name: &str, v: u64) {
        self.counters.insert(name.to_string(), v);
    }

    pub fn rate(&mut self, name: &str, basis: &str) {
        self.rate_basis.insert(name.to_string(), basis.to_string());
    }

    pub fn latency(&mut self, name: &str, what: &str, h: &Histogram<u64>, primary: bool) {
        self.latency
            .insert(name.to_string(), LatencyBlock::new(what, h));
        if primary || self.primary_latency.is_empty() {
            self.primary_latency = name.to_string();
        }
    }

    /// Adds a problem when `counters[name] > 0`.
    pub fn problem_if_nonzero(&mut self, name: &str, what: &str) {
        let n = self.counters.get(name).copied().unwrap_or(0);
        if n > 0 {
            self.problems.push(format!("{what}: {n}"));
        }
    }

    pub fn compute_rates(&mut self) {
        self.rates.clear();
        for (name, basis) in &self.rate_basis {
            let n = self.counters.get(basis).copied().unwrap_or(0) as f64;
            let r = if self.duration_secs > 0.0 {
                n / self.duration_secs
            } else {
                0.0
            };
            self.rates.insert(name.clone(), (r * 10.0).round() / 10.0);
        }
    }

    /// Finalize, write `<out>.json` and `<out>.svg`, print the JSON to stdout.
    pub fn finish_and_write(mut self, out: &Path) -> Result<Self> {
        self.finished_at = crate::common::rfc3339_now();
        self.compute_rates();
        let svg_path = out.with_extension("svg");
        self.files.insert("json".into(), out.display().to_string());
        self.files
            .insert("svg".into(), svg_path.display().to_string());
        if let Some(dir) = out.parent() {
            if !dir.as_os_str().is_empty() {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
            }
        }
        let json = to_json(&self)?;
        std::fs::write(out, format!("{json}\n"))
            .with_context(|| format!("writing {}", out.display()))?;
        let svg = self.svg();
        std::fs::write(&svg_path, svg)
            .with_context(|| format!("writing {}", svg_path.display()))?;
        // stdout gets the summary without the raw histogram dumps.
        let mut brief = self.clone();
        for b in brief.latency.values_mut() {
            b.histogram_us.clear();
        }
        println!("{}", to_json(&brief)?);
        eprintln!("summary: {}", out.display());
        eprintln!("chart:   {}", svg_path.display());
        Ok(self)
    }

    fn svg(&self) -> String {
        let block = self.latency.get(&self.primary_latency);
        let title = format!(
            "echo-load {} {} — {}",
            self.kind,
            self.scenario,
            block.map(|b| b.what.as_str()).unwrap_or("latency")
        );
        let mut rates: Vec<String> = self.rates.iter().map(|(k, v)| format!("{k}={v}")).collect();
        rates.truncate(4);
        let subtitle = format!(
            "{} · {:.1}s · {}",
            self.started_at,
            self.duration_secs,
            rates.join(" · ")
        );
        match block {
            Some(b) => svg_chart(&title, &subtitle, &b.to_hist()),
            None => svg_chart(&title, &subtitle, &new_hist()),
        }
    }
}

/// Pretty JSON whose arrays are written on one line (keeps histogram dumps
/// compact while objects stay readable). Key order follows the structs.
struct CompactArrays {
    pretty: serde_json::ser::PrettyFormatter<'static>,
    in_array: usize,
}

impl serde_json::ser::Formatter for CompactArrays {
    fn begin_array<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.in_array += 1;
        w.write_all(b"[")
    }
    fn end_array<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.in_array -= 1;
        w.write_all(b"]")
    }
    fn begin_array_value<W: ?Sized + std::io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        if first {
            Ok(())
        } else {
            w.write_all(b",")
        }
    }
    fn end_array_value<W: ?Sized + std::io::Write>(&mut self, _w: &mut W) -> std::io::Result<()> {
        Ok(())
    }
    fn begin_object<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        if self.in_array > 0 {
            w.write_all(b"{")
        } else {
            self.pretty.begin_object(w)
        }
    }
    fn end_object<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        if self.in_array > 0 {
            w.write_all(b"}")
        } else {
            self.pretty.end_object(w)
        }
    }
    fn begin_object_key<W: ?Sized + std::io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        if self.in_array > 0 {
            if first {
                Ok(())
            } else {
                w.write_all(b",")
            }
        } else {
            self.pretty.begin_object_key(w, first)
        }
    }
    fn begin_object_value<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        if self.in_array > 0 {
            w.write_all(b":")
        } else {
            self.pretty.begin_object_value(w)
        }
    }
    fn end_object_value<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        if self.in_array > 0 {
            Ok(())
        } else {
            self.pretty.end_object_value(w)
        }
    }
}

fn to_json<T: Serialize>(v: &T) -> Result<String> {
    let mut buf = Vec::new();
    let fmt = CompactArrays {
        pretty: serde_json::ser::PrettyFormatter::new(),
        in_array: 0,
    };
    let mut ser = serde_json::Serializer::with_formatter(&mut buf, fmt);
    v.serialize(&mut ser)?;
    Ok(String::from_utf8(buf)?)
}

/// Human label for a latency in µs.
pub fn fmt_us(us: f64) -> String {
    if us < 1_000.0 {
        format!("{}µs", trim_num(us))
    } else if us < 1_000_000.0 {
        format!("{}ms", trim_num(us / 1_000.0))
    } else {
        format!("{}s", trim_num(us / 1_000_000.0))
    }
}

fn trim_num(v: f64) -> String {
    let s = if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    };
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Bucket upper bounds (µs): the R10 series (10 per decade) from 1 µs to 1 h.
fn bucket_bounds() -> Vec<f64> {
    const R10: [f64; 10] = [1.0, 1.25, 1.6, 2.0, 2.5, 3.2, 4.0, 5.0, 6.3, 8.0];
    let mut v = Vec::new();
    let mut decade = 1.0;
    while decade <= MAX_US as f64 {
        for m in R10 {
            v.push(m * decade);
        }
        decade *= 10.0;
    }
    v
}

/// Geometry of the chart (pixels): the image, and the plot area inside its margins.
#[derive(Clone, Copy)]
struct Plot {
    w: f64,
    ht: f64,
    /// Left and top margins.
    ml: f64,
    mt: f64,
    /// Width and height of the plot area.
    pw: f64,
    ph: f64,
}

impl Plot {
    fn new() -> Self {
        let (w, ht) = (960.0_f64, 500.0_f64);
        let (ml, mr, mt, mb) = (80.0, 30.0, 84.0, 100.0);
        Self {
            w,
            ht,
            ml,
            mt,
            pw: w - ml - mr,
            ph: ht - mt - mb,
        }
    }
}

/// A histogram's counts on the log-spaced buckets, and the range of buckets shown.
struct Bars {
    bounds: Vec<f64>,
    counts: Vec<u64>,
    /// First and last bucket shown.
    lo: usize,
    hi: usize,
}

impl Bars {
    fn of(h: &Histogram<u64>) -> Self {
        let bounds = bucket_bounds();
        let mut bars = Self {
            counts: vec![0u64; bounds.len()],
            bounds,
            lo: 0,
            hi: 0,
        };
        for it in h.iter_recorded() {
            let v = h.highest_equivalent(it.value_iterated_to()) as f64;
            let i = bars.idx_of(v);
            bars.counts[i] += it.count_at_value();
        }
        let n_bounds = bars.bounds.len();
        let mut lo = bars.idx_of(h.min() as f64).saturating_sub(1);
        let mut hi = bars.idx_of(h.highest_equivalent(h.max()) as f64);
        // Show at least 12 buckets so a narrow distribution still reads as a histogram.
        while hi - lo + 1 < 12 && (lo > 0 || hi + 1 < n_bounds) {
            lo = lo.saturating_sub(1);
            if hi - lo + 1 < 12 && hi + 1 < n_bounds {
                hi += 1;
            }
        }
        bars.lo = lo;
        bars.hi = hi;
        bars
    }

    /// The bucket holding `v` (the last one for anything beyond).
    fn idx_of(&self, v: f64) -> usize {
        self.bounds
            .iter()
            .position(|&b| v <= b)
            .unwrap_or(self.bounds.len() - 1)
    }

    /// The counts of the buckets shown.
    fn shown(&self) -> &[u64] {
        &self.counts[self.lo..=self.hi]
    }
}

/// Hand-written SVG bar chart of a latency histogram on log-spaced buckets.
pub fn svg_chart(title: &str, subtitle: &str, h: &Histogram<u64>) -> String {
    let p = Plot::new();
    let Plot { w, ht, .. } = p;
    let mut s = String::new();
    let _ = write!(
        s,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{ht}" viewBox="0 0 {w} {ht}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{x}" y="24" text-anchor="middle" font-size="16" font-weight="bold">{t}</text>
<text x="{x}" y="44" text-anchor="middle" fill="#555">{st}</text>
"##,
        x = w / 2.0,
        t = xml_escape(title),
        st = xml_escape(subtitle)
    );

    if h.is_empty() {
        let _ = write!(
            s,
            r##"<text x="{}" y="{}" text-anchor="middle" fill="#a00" font-size="14">no samples recorded</text>
</svg>
"##,
            w / 2.0,
            ht / 2.0
        );
        return s;
    }

    let bars = Bars::of(h);
    let shown = bars.shown();
    // 10 % headroom above the tallest bar.
    let maxc = (shown.iter().copied().max().unwrap_or(1).max(1) as f64 * 1.1).ceil();
    let bw = p.pw / shown.len().max(1) as f64;
    draw_axes(&mut s, &p, maxc);
    draw_bars(&mut s, &p, &bars, maxc, bw);
    draw_percentiles(&mut s, &p, &bars, h, bw);
    s.push_str("</svg>\n");
    s
}

/// The axes, the y grid with its counts and the axis titles.
fn draw_axes(s: &mut String, p: &Plot, maxc: f64) {
    let Plot {
        ht, ml, mt, pw, ph, ..
    } = *p;
    let _ = writeln!(
        s,
        r##"<line x1="{ml}" y1="{y0}" x2="{x1}" y2="{y0}" stroke="#000"/><line x1="{ml}" y1="{mt}" x2="{ml}" y2="{y0}" stroke="#000"/>"##,
        y0 = mt + ph,
        x1 = ml + pw
    );
    for i in 0..=4 {
        let frac = i as f64 / 4.0;
        let y = mt + ph - frac * ph;
        let _ = writeln!(
            s,
            r##"<line x1="{ml}" y1="{y:.1}" x2="{x1}" y2="{y:.1}" stroke="#ddd"/><text x="{tx}" y="{ty:.1}" text-anchor="end">{c}</text>"##,
            x1 = ml + pw,
            tx = ml - 6.0,
            ty = y + 4.0,
            c = (maxc * frac).round() as u64
        );
    }
    let _ = writeln!(
        s,
        r##"<text transform="translate(18,{y}) rotate(-90)" text-anchor="middle">samples</text>"##,
        y = mt + ph / 2.0
    );
    let _ = writeln!(
        s,
        r##"<text x="{x}" y="{y}" text-anchor="middle">latency (bucket upper bound, log scale)</text>"##,
        x = ml + pw / 2.0,
        y = ht - 12.0
    );
}

/// One bar per bucket shown, with its upper bound as x label (about 30 labels at most).
fn draw_bars(s: &mut String, p: &Plot, bars: &Bars, maxc: f64, bw: f64) {
    let Plot { ml, mt, ph, .. } = *p;
    let shown = bars.shown();
    let n = shown.len().max(1) as f64;
    let label_every = ((n / 30.0).ceil() as usize).max(1);
    for (i, &c) in shown.iter().enumerate() {
        let x = ml + i as f64 * bw;
        let bh = c as f64 / maxc * ph;
        let ub = bars.bounds[bars.lo + i];
        let _ = writeln!(
            s,
            r##"<rect x="{x:.1}" y="{y:.1}" width="{bwi:.1}" height="{bh:.1}" fill="#4a7bd0"><title>≤{lab}: {c}</title></rect>"##,
            y = mt + ph - bh,
            bwi = (bw - 2.0).max(1.0),
            lab = fmt_us(ub)
        );
        if i % label_every == 0 {
            let lx = x + bw / 2.0;
            let ly = mt + ph + 14.0;
            let _ = writeln!(
                s,
                r##"<text x="{lx:.1}" y="{ly:.1}" text-anchor="end" transform="rotate(-45 {lx:.1} {ly:.1})">{lab}</text>"##,
                lab = fmt_us(ub)
            );
        }
    }
}

/// The p50, p90 and p99 markers with their legend, and the count, mean and max.
fn draw_percentiles(s: &mut String, p: &Plot, bars: &Bars, h: &Histogram<u64>, bw: f64) {
    let Plot { ml, mt, pw, ph, .. } = *p;
    let shown = bars.shown();
    let marks = [
        ("p50", h.value_at_quantile(0.5), "#2a2"),
        ("p90", h.value_at_quantile(0.9), "#d80"),
        ("p99", h.value_at_quantile(0.99), "#c22"),
    ];
    let mut legend_x = ml;
    for (name, v, color) in marks.iter() {
        // Position inside the bucket, interpolated on the log scale.
        let vi = bars.idx_of(*v as f64);
        let ub = bars.bounds[vi];
        let lb = if vi == 0 {
            ub / 1.25
        } else {
            bars.bounds[vi - 1]
        };
        let frac = (((*v as f64).max(lb).ln() - lb.ln()) / (ub.ln() - lb.ln())).clamp(0.0, 1.0);
        let i = vi
            .saturating_sub(bars.lo)
            .min(shown.len().saturating_sub(1));
        let x = ml + (i as f64 + frac) * bw;
        let _ = writeln!(
            s,
            r##"<line x1="{x:.1}" y1="{mt}" x2="{x:.1}" y2="{y0}" stroke="{color}" stroke-width="1.5" stroke-dasharray="5 3"/>"##,
            y0 = mt + ph,
        );
        let _ = writeln!(
            s,
            r##"<line x1="{legend_x:.1}" y1="{ly}" x2="{lx2:.1}" y2="{ly}" stroke="{color}" stroke-width="2" stroke-dasharray="5 3"/><text x="{tx:.1}" y="{ty}" fill="{color}">{name} {lab}</text>"##,
            ly = mt - 12.0,
            lx2 = legend_x + 18.0,
            tx = legend_x + 22.0,
            ty = mt - 8.0,
            lab = fmt_us(*v as f64)
        );
        legend_x += 130.0;
    }
    let _ = writeln!(
        s,
        r##"<text x="{x}" y="{y}" text-anchor="end" fill="#333">n={n} · mean {mean} · max {mx}</text>"##,
        x = ml + pw,
        y = mt - 8.0,
        n = h.len(),
        mean = fmt_us(h.mean()),
        mx = fmt_us(h.max() as f64)
    );
}

/// Combine the summaries of cooperating processes into one.
pub fn merge(files: &[PathBuf], out: Option<&Path>) -> Result<Summary> {
    let parts = read_parts(files)?;
    let mut m = parts[0].clone();
    m.counters.clear();
    m.latency.clear();
    m.errors_sample.clear();
    m.notes.clear();
    m.checks.clear();
    m.problems.clear();
    m.nothing_worked = parts.iter().all(|p| p.nothing_worked);
    m.files.clear();
    m.process_index = 0;
    m.process_count = parts.len() as u32;
    m.merged_from = files.iter().map(|f| f.display().to_string()).collect();
    let mut hists: BTreeMap<String, (String, Histogram<u64>)> = BTreeMap::new();
    for p in &parts {
        m.absorb(p, &mut hists);
    }
    for (k, (what, h)) in hists {
        m.latency.insert(k, LatencyBlock::new(&what, &h));
    }
    let out = match out {
        Some(p) => p.to_path_buf(),
        None => crate::common::default_results_dir().join(format!(
            "{}-{}-merged-{}.json",
            m.kind,
            m.scenario,
            crate::common::timestamp_slug()
        )),
    };
    m.finish_and_write(&out)
}

/// The summaries to merge, all of one kind and scenario (at least one).
fn read_parts(files: &[PathBuf]) -> Result<Vec<Summary>> {
    if files.is_empty() {
        bail!("merge needs at least one summary file");
    }
    let mut parts: Vec<Summary> = Vec::new();
    for f in files {
        let text =
            std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
        let s: Summary = serde_json::from_str(&text)
            .with_context(|| format!("{} is not an echo-load summary", f.display()))?;
        parts.push(s);
    }
    let first = &parts[0];
    for p in &parts[1..] {
        if p.kind != first.kind || p.scenario != first.scenario {
            bail!(
                "cannot merge {} {} with {} {}",
                first.kind,
                first.scenario,
                p.kind,
                p.scenario
            );
        }
    }
    Ok(parts)
}

impl Summary {
    /// Adds one process's summary to this merged one; its latency histograms go to `hists`
    /// (name → what was measured, histogram).
    fn absorb(&mut self, p: &Summary, hists: &mut BTreeMap<String, (String, Histogram<u64>)>) {
        self.duration_secs = self.duration_secs.max(p.duration_secs);
        if p.started_at < self.started_at {
            self.started_at = p.started_at.clone();
        }
        for (k, v) in &p.counters {
            *self.counters.entry(k.clone()).or_insert(0) += v;
        }
        for (k, b) in &p.latency {
            let e = hists
                .entry(k.clone())
                .or_insert_with(|| (b.what.clone(), new_hist()));
            let _ = e.1.add(b.to_hist());
        }
        for e in &p.errors_sample {
            if self.errors_sample.len() < 40 && !self.errors_sample.contains(e) {
                self.errors_sample.push(e.clone());
            }
        }
        for pr in &p.problems {
            self.problems
                .push(format!("process {}: {pr}", p.process_index));
        }
        for nte in &p.notes {
            if !self.notes.contains(nte) {
                self.notes.push(nte.clone());
            }
        }
        for (k, v) in &p.checks {
            let merged = merge_check(k, self.checks.get(k), v);
            self.checks.insert(k.clone(), merged);
        }
    }
}

/// One check of the merged summary from the value so far and a process's value: counts add
/// up, booleans must all hold, plan facts and anything else keep the first value.
fn merge_check(
    k: &str,
    prev: Option<&serde_json::Value>,
    v: &serde_json::Value,
) -> serde_json::Value {
    match (prev, v) {
        (None, _) => v.clone(),
        (Some(prev), _) if k.starts_with("plan_") => prev.clone(),
        (Some(serde_json::Value::Bool(a)), serde_json::Value::Bool(b)) => (*a && *b).into(),
        (Some(prev), _) if prev.is_u64() && v.is_u64() => {
            (prev.as_u64().unwrap_or(0) + v.as_u64().unwrap_or(0)).into()
        }
        (Some(prev), _) => prev.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn svg_has_bars_and_labels() {
        let mut h = new_hist();
        for v in [100, 150, 200, 1_000, 5_000, 20_000] {
            record(&mut h, v);
        }
        let s = svg_chart("t", "s", &h);
        assert!(s.starts_with("<svg"));
        assert!(s.contains("<rect x="));
        assert!(s.contains("p99"));
        assert!(s.trim_end().ends_with("</svg>"));
        let e = svg_chart("t", "s", &new_hist());
        assert!(e.contains("no samples"));
    }

    #[test]
    fn block_roundtrip() {
        let mut h = new_hist();
        for v in 1..1000u64 {
            record(&mut h, v * 7);
        }
        let b = LatencyBlock::new("x", &h);
        let h2 = b.to_hist();
        assert_eq!(h.len(), h2.len());
        assert_eq!(h.value_at_quantile(0.99), h2.value_at_quantile(0.99));
    }

    #[test]
    fn labels() {
        assert_eq!(fmt_us(125.0), "125µs");
        assert_eq!(fmt_us(1250.0), "1.25ms");
        assert_eq!(fmt_us(2_000_000.0), "2s");
    }
}
