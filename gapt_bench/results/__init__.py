"""From runs to answers: the store and its record schema (`store`), statistics (`stats`), analyses
(`analysis`: report, claims, leaderboard, regression check), plots, the static site and curve export (`tracking`).
"""
