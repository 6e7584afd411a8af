"""A static, self-contained web site of a results folder (`gapt-bench site RESULTS -o DIR`).

The leaderboard (index.html), the papers' claims (paper.html), one page per task (report, figures, its
configurations) and one page per configuration (each run's status, metrics, environment and training curve), with
the provenance on every page. No page loads anything: styles and the sorting script are inline, figures are PNG
data URIs or inline SVG, so the folder works from `file://`, offline, and on any static host (GitHub Pages).

Modules, one job each:
  build       build_site: read the records, write the pages
  content     the analyses the pages show (the CLI's report, paper table and leaderboard), runs by configuration
  pages       each page's body
  figures     plots.plot_all per task, as data URIs
  curves      a run's curve as a small inline SVG
  provenance  versions, commits, machine classes, date, the rebuild command
  html        escaping, tables, the page skeleton with its inline CSS and JS
  names       the file names every link is built from
"""

from gapt_bench.results.site.build import Site, build_site, default_command

__all__ = ["Site", "build_site", "default_command"]
