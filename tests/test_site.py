"""The static site (`gapt-bench site`): structure, links that stay inside the folder, no network addresses, the same
numbers as `report/leaderboard/paper --format json`, escaping, provenance; and a real headless Chromium that
opens it (`-m browser`)."""

from __future__ import annotations

import contextlib
import io
import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from factories import make_record

from gapt_bench import cli
from gapt_bench.results import analysis

GIT_SHA = "0123456789abcdef0123456789abcdef01234567"
MACHINE = "cpu:Test CPU <v2> & co [avx2]"  # escaping on every page
ODD_METHOD = 'x<y&"z"'  # a plug-in method whose name HTML would misread
TASKS = ("fineweb_lm", "arithmetic_ood")


def _curve(seed: int, method: str) -> list[dict]:
    rows = []
    for i in range(40):
        step = 25 * (i + 1)
        phase = 2 if method == "gapt" and 10 <= i < 20 else 1
        mbe = [1.2 - 0.01 * i - 0.1 * layer + 0.01 * seed for layer in range(2)]
        rows.append(
            {
                "step": step,
                "tokens": step * 2048,
                "ce": 3.0 / (1 + 0.05 * i) + 0.01 * seed,
                "loss": 3.0,
                "lr": 1e-3,
                "grad_norm": 0.5,
                "phase": phase,
                "mbe_layer_0": mbe[0],
                "mbe_layer_1": mbe[1],
                "mbe": sum(mbe) / 2,
            }
        )
    return rows


def make_results(folder: Path) -> Path:
    """A results folder as `gapt-bench run` leaves it: runs.jsonl plus runs/<run_id>/curve.jsonl."""
    env = {
        "git_sha": GIT_SHA,
        "git_dirty": False,
        "gapt_bench": "0.1.0",
        "machine_class": MACHINE,
        "device": "cpu",
        "python": "3.11.7",
        "cpu_flags": ["avx2"],
    }
    records = []
    for seed in range(3):
        for method, shift in (("baseline", 0.0), ("gapt", -0.08), ("mbe", 0.05), (ODD_METHOD, 0.3)):
            s = 0.01 * seed + 0.004 * ((seed * 7 + len(method) * 3) % 5)  # seed noise, differing per method
            records.append(
                make_record(
                    "fineweb_lm",
                    method,
                    seed,
                    env=env,
                    metrics={
                        "val_ce": 2.0 + shift + s,
                        "val_mbe": 1.2 + 2 * shift - s,
                        "val_mbe_centered": 1.1 + shift + s,
                        "val_mbe_layer_0": 1.3 + shift,
                        "val_mbe_layer_1": 1.0 + shift + s,
                    },
                )
            )
        for method, shift in (("baseline", 0.0), ("gapt", -0.5)):
            s = 0.03 * seed * (1 + seed) + 0.01 * ((seed * 5 + len(method)) % 3)
            records.append(
                make_record(
                    "arithmetic_ood",
                    method,
                    seed,
                    env=env,
                    metrics={
                        "ood_answer_ce": 10.0 + shift + s,
                        "ood_digit_acc": 0.05 - shift / 10 + s / 10,
                        "ood_mbe_layer_0": 0.8 + shift / 5,
                        "ood_mbe_layer_1": 0.5 + s,
                    },
                )
            )
    records.append(
        make_record(
            "fineweb_lm",
            "gapt",
            3,
            env=env,
            status="failed",
            error={"type": "RuntimeError", "message": "boom <in> step 3"},
        )
    )
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "runs.jsonl", "w") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
            if r["status"] == "ok":
                run = folder / "runs" / r["run_id"]
                run.mkdir(parents=True)
                rows = _curve(r["seed"], r["method"])
                (run / "curve.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    return folder


def _cli(*argv: str) -> tuple[int, str]:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = cli.main(list(argv))
    return rc, buf.getvalue()


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> tuple[Path, Path]:
    """(results, site folder), built once through the command line."""
    root = tmp_path_factory.mktemp("site")
    results = make_results(root / "results")
    out = root / "site"
    rc, text = _cli("site", str(results), "-o", str(out))
    assert rc == 0, text
    assert f"open {out / 'index.html'}" in text
    return results, out


class Page(HTMLParser):
    """Every tag's attributes, ids, tables (as rows of cell texts) and inline style text of one page."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.attrs: list[tuple[str, str, str]] = []  # (tag, name, value)
        self.ids: set[str] = set()
        self.tables: dict[str, list[list[str]]] = {}
        self.table_ids: list[str] = []
        self.styles: list[str] = []
        self.scripts: list[str] = []
        self._table: list[list[str]] | None = None
        self._cell: list[str] | None = None
        self._in: str | None = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            self.attrs.append((tag, name, value or ""))
            if name == "id":
                self.ids.add(value or "")
        if tag == "table":
            key = dict(attrs).get("id") or f"table{len(self.tables)}"
            self._table = self.tables.setdefault(key, [])
            self.table_ids.append(key)
        elif tag == "tr" and self._table is not None:
            self._table.append([])
        elif tag in ("td", "th") and self._table is not None:
            self._cell = []
        elif tag in ("style", "script"):
            self._in = tag

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None and self._table:
            self._table[-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "table":
            self._table = None
        elif tag in ("style", "script"):
            self._in = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)
        if self._in == "style":
            self.styles.append(data)
        elif self._in == "script":
            self.scripts.append(data)


def _pages(out: Path) -> dict[str, Page]:
    return {p.name: Page(p.read_text(encoding="utf-8")) for p in sorted(out.glob("*.html"))}


def _rows(table: list[list[str]]) -> list[dict[str, str]]:
    head, *body = table
    return [dict(zip(head, r)) for r in body]


# ---------------------------------------------------------------------------------------------------------------


def test_site_has_leaderboard_paper_and_one_page_per_task(site):
    _results, out = site
    pages = _pages(out)
    assert {"index.html", "paper.html", *(f"task-{t}.html" for t in TASKS)} <= set(pages)
    board = _rows(pages["index.html"].tables["leaderboard"])
    assert len(board) >= 3 and {"#", "method", "mean win rate", "wins/losses/ties"} <= set(board[0])
    assert board[0]["#"] == "1" and "fineweb_lm" in board[0]
    primary = _rows(pages["index.html"].tables["primary"])  # one row per primary metric, one column per method
    assert {r["task / primary metric"] for r in primary} >= {"fineweb_lm/val_ce ↓", "arithmetic_ood/ood_answer_ce ↓"}
    assert {r["method"] for r in board} <= set(primary[0])
    paper = _rows(pages["paper.html"].tables["paper"])
    assert any(r["claim"].startswith("GAPT: FineWeb validation CE") for r in paper)
    assert any("control" in r["claim"] for r in paper)
    assert all(r["preset / scale"] for r in paper if r["measured"] not in ("—", ""))
    for task in TASKS:
        page = pages[f"task-{task}.html"]
        assert page.tables["report"], task
        links = [v for tag, name, v in page.attrs if tag == "a" and name == "href" and v.startswith("runs-")]
        assert links, f"{task}: no links to its runs"
        for href in links:  # one page per configuration, each run a details block with its env and curve
            text = (out / href).read_text(encoding="utf-8")
            assert text.count("<details") >= 1 and "environment" in text and "Config" in text


def test_every_link_resolves_inside_the_site_and_nothing_is_fetched(site):
    _test_links_resolve(site[1])


def _test_links_resolve(out: Path) -> None:
    """Every href is a page of the folder (and its #anchor exists there); every src is embedded data; no address,
    external script, style sheet, @import or url() anywhere; nothing but HTML files."""
    pages = _pages(out)
    for name, page in pages.items():
        for tag, attr, value in page.attrs:
            if attr in ("src", "href", "action", "srcset", "poster", "data") and tag != "td":
                assert not re.match(r"^\s*([a-z][a-z0-9+.-]*:)?//", value, re.I), f"{name}: {tag} {attr}={value}"
                if attr == "src":
                    assert value.startswith("data:image/"), f"{name}: <{tag} src> not embedded: {value[:60]}"
                    continue
                if attr != "href":
                    continue
                parts = urlsplit(value)
                assert not parts.scheme and not parts.netloc, f"{name}: {value}"
                target = unquote(parts.path) or name
                assert target in pages, f"{name}: link to {target} which is not in the site"
                if parts.fragment:
                    assert parts.fragment in pages[target].ids, f"{name}: no #{parts.fragment} in {target}"
            if tag == "script":
                assert attr != "src", f"{name}: external script"
            if tag == "link":
                pytest.fail(f"{name}: <link> element (external style or font)")
        css = "".join(page.styles)
        assert "@import" not in css and "url(" not in css, name
    for path in out.rglob("*"):  # no address of any kind anywhere in the folder
        if path.is_file():
            text = path.read_text(encoding="utf-8")
            assert "http://" not in text and "https://" not in text, path.name
    assert {p.suffix for p in out.rglob("*") if p.is_file()} == {".html"}


def test_numbers_equal_report_json(site):
    results, out = site
    rc, text = _cli("report", str(results), "--format", "json")
    assert rc == 0
    rep = json.loads(text)
    page = Page((out / "task-fineweb_lm.html").read_text(encoding="utf-8"))
    rows = _rows(page.tables["report"])
    checked = 0
    for c in rep["comparisons"]:
        if c["task"] != "fineweb_lm" or c["metric"] not in ("val_ce", "val_mbe", "val_mbe_centered"):
            continue
        row = next(r for r in rows if r["metric"] == c["metric"] and r["method"] == c["label"])
        grp = next(g for g in rep["groups"] if g["config_hash"] == c["config_hash"] and g["metric"] == c["metric"])
        half = (grp["ci_high"] - grp["ci_low"]) / 2
        assert row["value"].startswith(f"{grp['mean']:.4g} ± {half:.2g} (n={grp['n']}")  # "(n=3, 1 failed)"
        assert row["value"] == analysis.fmt_mean_ci(grp)
        assert row["Δ (rel)"] == f"{c['delta']:.3g} ({c['rel_delta'] * 100:+.1f}%)"
        assert row["verdict"] == c["verdict"]
        checked += 1
    assert checked >= 6
    rc, text = _cli("leaderboard", str(results), "--format", "json")
    board = json.loads(text)
    index = Page((out / "index.html").read_text(encoding="utf-8"))
    site_rows = {r["method"]: r for r in _rows(index.tables["leaderboard"])}
    val_ce = next(r for r in _rows(index.tables["primary"]) if r["task / primary metric"] == "fineweb_lm/val_ce ↓")
    for r in board["rows"]:
        shown = site_rows[r["method"]]
        assert shown["mean win rate"].startswith(f"{r['win_rate']:.2f} ")
        assert shown["#"] == str(r["rank"]) and shown["wins/losses/ties"] == f"{r['wins']}/{r['losses']}/{r['ties']}"
        assert (
            shown["fineweb_lm"] == f"{r['tasks']['fineweb_lm']['win_rate']:.2f} (#{r['tasks']['fineweb_lm']['rank']})"
        )
        cell = r["evidence"]["fineweb_lm/val_ce"]
        assert val_ce[r["method"]] == cell
        col = next(c for c in board["columns"] if c["metric"] == "val_ce")
        assert cell.startswith(f"{col['cells'][r['method']]['mean']:.4g} [")
    rc, text = _cli("paper", str(results), "--format", "json")
    paper = json.loads(text)
    shown = _rows(Page((out / "paper.html").read_text(encoding="utf-8")).tables["paper"])
    ce = next(r for r in paper["rows"] if r["metric"] == "val_ce" and r["role"] == "claim")
    assert any(r["measured"] == f"{ce['measured'] * 100:+.1f}%" and r["verdict"] == ce["verdict"] for r in shown)


def test_labels_are_escaped(site):
    _, out = site
    for path in out.glob("*.html"):
        text = path.read_text(encoding="utf-8")
        assert ODD_METHOD not in text and "<v2>" not in text, path.name
        assert "cpu:Test CPU &lt;v2&gt; &amp; co [avx2]" in text, path.name  # provenance on every page
    index = (out / "index.html").read_text(encoding="utf-8")
    assert "x&lt;y&amp;&quot;z&quot;" in index
    assert ODD_METHOD in {r["method"] for r in _rows(Page(index).tables["leaderboard"])}  # and reads back intact
    runs = "".join(p.read_text(encoding="utf-8") for p in out.glob("runs-fineweb_lm-*.html"))
    assert "boom &lt;in&gt; step 3" in runs and 'class="status-failed"' in runs


def test_provenance_on_every_page(site):
    results, out = site
    for path in out.glob("*.html"):
        text = path.read_text(encoding="utf-8")
        foot = text[text.index('<footer class="provenance">') :]
        assert GIT_SHA[:12] in foot and "0.1.0" in foot and "UTC" in foot, path.name
        assert f"gapt-bench site {results} -o {out}" in foot, path.name
        assert "Site built" in foot and "git commit" in foot


def test_figures_and_curves_are_embedded(site):
    _, out = site
    page = (out / "task-fineweb_lm.html").read_text(encoding="utf-8")
    imgs = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(imgs) >= 3  # one curve per configuration, per-layer MBE
    assert "per-layer MBE" in page and "training curve" in page
    runs = next(out.glob("runs-fineweb_lm-v1-*.html")).read_text(encoding="utf-8")
    svg = runs[runs.index("<svg") : runs.index("</svg>")]
    assert "optimizer step" in svg and "train CE (nats)" in svg and "<polyline" in svg
    gapt = [p for p in out.glob("runs-fineweb_lm-*.html") if "<h1>fineweb_lm / gapt</h1>" in p.read_text()]
    assert gapt and "phase 2 (compression)" in gapt[0].read_text(encoding="utf-8")


def test_site_of_old_records_and_bad_input(tmp_path):
    baseline = Path(__file__).resolve().parents[1] / "baselines" / "cpu-quick.jsonl"
    rc, text = _cli("site", str(baseline), "-o", str(tmp_path / "s"), "--no-figures")
    assert rc == 0, text
    index = (tmp_path / "s" / "index.html").read_text(encoding="utf-8")
    assert 'id="leaderboard"' in index and "--no-figures" in index
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "runs.jsonl").write_text("")
    assert cli.main(["site", str(empty), "-o", str(tmp_path / "x")]) == 2
    assert not (tmp_path / "x").exists()
    assert cli.main(["site", str(baseline)]) == 2  # -o is required


def test_rebuild_removes_its_stale_pages_only(tmp_path):
    results = make_results(tmp_path / "results")
    out = tmp_path / "site"
    assert _cli("site", str(results), "-o", str(out), "--no-figures")[0] == 0
    (out / "task-mine.html").write_text("<html>a page of the user's own</html>")
    before = {p.name for p in out.glob("*.html")}
    lines = (results / "runs.jsonl").read_text().splitlines()
    (results / "runs.jsonl").write_text("".join(x + "\n" for x in lines if '"arithmetic_ood"' not in x))
    assert _cli("site", str(results), "-o", str(out), "--no-figures")[0] == 0
    after = {p.name for p in out.glob("*.html")}
    assert "task-arithmetic_ood.html" in before and "task-arithmetic_ood.html" not in after
    assert not any(n.startswith("runs-arithmetic_ood") for n in after) and "task-mine.html" in after
    _test_links_resolve(out)


def test_a_build_failing_midway_leaves_the_previous_site_whole(tmp_path, monkeypatch, capsys):
    from gapt_bench.results.site import pages

    results = make_results(tmp_path / "results")
    out = tmp_path / "site"
    assert _cli("site", str(results), "-o", str(out), "--no-figures")[0] == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    lines = (results / "runs.jsonl").read_text().splitlines()  # the next build would change every page
    (results / "runs.jsonl").write_text("".join(x + "\n" for x in lines if '"arithmetic_ood"' not in x))
    calls = []

    def runs_body(g, results_dir):
        calls.append(g)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return "<p>new</p>"

    monkeypatch.setattr(pages, "runs_body", runs_body)
    capsys.readouterr()
    assert cli.main(["site", str(results), "-o", str(out), "--no-figures"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "No space left on device" in err and "previous pages" in err, err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results", "site"]  # no staging folder left behind


def test_configurations_follow_the_chosen_reference(site):
    from gapt_bench.results.site.content import gather

    records = [json.loads(x) for x in (site[0] / "runs.jsonl").read_text().splitlines()]
    assert next(g.method for g in gather(records).groups["fineweb_lm"]) == "baseline"
    methods = [g.method for g in gather(records, reference="mbe").groups["fineweb_lm"]]
    assert methods[0] == "mbe" and methods.index("baseline") > 0  # as the report orders them under --reference


def test_a_note_belongs_to_the_task_it_names_whole():
    from gapt_bench.results.site.content import mentions

    for note in (
        "fineweb_lm/gapt: 1 diverged, 0 failed (not counted)",
        "fineweb_lm: declares no primary metrics",
        "fineweb_lm (gapt): records carry no primary_metrics",
        "see fineweb_lm/gapt",
    ):
        assert mentions(note, "fineweb_lm") and not mentions(note, "fineweb"), note
    assert mentions("fineweb: no runs", "fineweb") and not mentions("fineweb.v2: no runs", "fineweb")
    assert not mentions("x_fineweb/gapt: no runs", "fineweb") and not mentions("about fineweb in general", "fineweb")


def test_sort_script_is_inline_and_reads_numbers():
    from gapt_bench.results.site.html import JS

    assert "parseFloat" in JS and "data-sort" in JS and "http" not in JS


# ---------------------------------------------------------------------------------------------------------------
# A real browser: Debian's chromium, headless, offline


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--enable-logging=stderr",
    "--v=0",
]
CONSOLE_ERRORS = re.compile(r"Uncaught|ERROR:CONSOLE|:ERROR:.*(?:CONSOLE|console)")


def _chromium(url: str, profile: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *extra, url],
        capture_output=True,
        text=True,
        timeout=120,
    )


def _console_errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if CONSOLE_ERRORS.search(line)]


@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not on PATH (Debian: apt-get install -y chromium)")
def test_chromium_renders_the_site(site, tmp_path):
    _, out = site
    shot = tmp_path / "index.png"
    url = (out / "index.html").resolve().as_uri()
    res = _chromium(
        url, tmp_path / "profile-shot", f"--screenshot={shot}", "--window-size=1400,1000", "--hide-scrollbars"
    )
    assert shot.is_file() and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", res.stderr[-2000:]
    assert shot.stat().st_size > 20_000, "screenshot looks blank"
    assert not _console_errors(res.stderr), _console_errors(res.stderr)
    for name in ("index.html", "paper.html", "task-fineweb_lm.html"):
        res = _chromium((out / name).resolve().as_uri(), tmp_path / f"profile-{name}", "--dump-dom")
        assert res.returncode == 0, res.stderr[-2000:]
        assert not _console_errors(res.stderr), (name, _console_errors(res.stderr))
        dom = Page(res.stdout)
        assert ("th", "title", "sort by this column") in dom.attrs, f"{name}: the inline script did not run"
        if name == "index.html":
            board = _rows(dom.tables["leaderboard"])
            assert len(board) >= 3 and all(r["method"] for r in board)


@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not on PATH (Debian: apt-get install -y chromium)")
def test_chromium_sorts_the_leaderboard_on_click(site, tmp_path):
    """Click a header (numbers as numbers, ascending, then descending; '—' stays last), in the browser: the
    baseline's column of the primary metrics, and a task's win rates in the ranking (two methods lack that task)."""
    _, out = site
    probe = """<script>
      function sortBy(id, head) {
        var t = document.getElementById(id), th = t.tHead.rows[0].cells;
        var col = Array.prototype.findIndex.call(th, function (h) { return h.textContent === head; });
        var order = function () {
          return Array.prototype.map.call(t.tBodies[0].rows, function (r) { return r.cells[col].textContent; })
            .join("|");
        };
        th[col].click(); var asc = order(); th[col].click(); return [asc, order()];
      }
      var p = sortBy("primary", "baseline"), b = sortBy("leaderboard", "arithmetic_ood");
      document.body.setAttribute("data-asc", p[0]); document.body.setAttribute("data-desc", p[1]);
      document.body.setAttribute("data-task-asc", b[0]); document.body.setAttribute("data-task-desc", b[1]);
    </script></body>"""
    page = tmp_path / "index.html"  # beside a copy of the site, so its links still resolve
    shutil.copytree(out, tmp_path, dirs_exist_ok=True)
    page.write_text(page.read_text(encoding="utf-8").replace("</body>", probe), encoding="utf-8")
    res = _chromium(page.resolve().as_uri(), tmp_path / "profile", "--dump-dom")
    assert not _console_errors(res.stderr), _console_errors(res.stderr)
    body = {n: v for t, n, v in Page(res.stdout).attrs if t == "body"}
    asc, desc = body["data-asc"].split("|"), body["data-desc"].split("|")
    means = [float(x.split()[0]) for x in asc if x != "—"]
    assert means == sorted(means) and len(means) >= 3
    assert [float(x.split()[0]) for x in desc if x != "—"] == sorted(means, reverse=True)
    for key in ("data-task-asc", "data-task-desc"):
        cells = body[key].split("|")
        assert "—" in cells and cells[-1] == "—" and cells.index("—") == len([c for c in cells if c != "—"])
    rates = [float(x.split()[0]) for x in body["data-task-asc"].split("|") if x != "—"]
    assert rates == sorted(rates) and len(rates) >= 2


LAYOUT_PROBE = """<script>
(function () {
  var W = document.documentElement.clientWidth, bad = [];
  document.querySelectorAll("th.key").forEach(function (th) {
    var r = th.getBoundingClientRect();
    if (r.right > W + 0.5) { bad.push("key column '" + th.textContent + "' ends at x=" + Math.round(r.right)); }
  });
  document.querySelectorAll("tr").forEach(function (tr) {
    var h = tr.getBoundingClientRect().height;
    if (h > 200) { bad.push("row '" + tr.textContent.slice(0, 50) + "' is " + Math.round(h) + " px tall"); }
  });
  document.body.setAttribute("data-width", W);
  document.body.setAttribute("data-keys", document.querySelectorAll("th.key").length);
  document.body.setAttribute("data-layout", bad.join(" | "));
})();
</script></body>"""


def _layout(out: Path, tmp_path: Path, names: list[str]) -> dict[str, dict[str, str]]:
    """Each page in a 1280-pixel-wide headless Chromium: its width, how many key columns it has, and every key
    column header whose right edge is past the window or table row taller than 200 px."""
    shutil.copytree(out, tmp_path / "copy", dirs_exist_ok=True)
    found = {}
    for name in names:
        page = tmp_path / "copy" / name
        page.write_text(page.read_text(encoding="utf-8").replace("</body>", LAYOUT_PROBE), encoding="utf-8")
        res = _chromium(page.resolve().as_uri(), tmp_path / f"profile-{name}", "--window-size=1280,900", "--dump-dom")
        assert res.returncode == 0 and not _console_errors(res.stderr), res.stderr[-2000:]
        found[name] = {n: v for t, n, v in Page(res.stdout).attrs if t == "body"}
    return found


@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not on PATH (Debian: apt-get install -y chromium)")
def test_chromium_shows_the_key_columns_at_1280_pixels(site, tmp_path):
    """The leaderboard (method, primary metrics), the claims (claim, measured, CI, verdict) and each task's report
    fit a 1280-pixel window without scrolling sideways, and no row is taller than 200 px: on this fixture and on
    the committed quick suite (108 runs, the text-memorization sweep's 8 setups, the claims' long notes)."""
    _, out = site
    names = ["index.html", "paper.html", *(f"task-{t}.html" for t in TASKS)]
    quick = tmp_path / "quick-site"
    rc, text = _cli(
        "site",
        str(Path(__file__).resolve().parent.parent / "baselines" / "cpu-quick.jsonl"),
        "-o",
        str(quick),
        "--no-figures",
    )
    assert rc == 0, text
    quick_names = ["index.html", "paper.html", *sorted(p.name for p in quick.glob("task-*.html"))]
    for folder, pages, where in ((out, names, tmp_path / "fixture"), (quick, quick_names, tmp_path / "quick")):
        for name, body in _layout(folder, where, pages).items():
            assert int(body["data-width"]) >= 1250, (name, body["data-width"])
            assert int(body["data-keys"]) >= 4, (name, "no key columns marked")
            assert body["data-layout"] == "", (folder.name, name, body["data-layout"])


@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not on PATH (Debian: apt-get install -y chromium)")
def test_chromium_console_check_catches_a_script_error(tmp_path):
    """The console check is not vacuous: a page whose script throws is caught."""
    bad = tmp_path / "bad.html"
    bad.write_text("<!DOCTYPE html><html><body><p>x</p><script>notDefinedAnywhere();</script></body></html>")
    res = _chromium(bad.resolve().as_uri(), tmp_path / "profile", "--dump-dom")
    assert _console_errors(res.stderr), res.stderr[-2000:]
