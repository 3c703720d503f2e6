"""`lora-vl study`: the study of paper.md, end to end, with a claims report.

`run` trains and evaluates every run of the study through the stages' own Python APIs (adapt
with stage-2 snapshots, safety SFT and DPO, the mixed setting, a merge sweep, `lora-vl eval`,
`lora-vl analyze`), once per seed; `claims` turns the measured numbers into each finding's verdict
(held / not held / inconclusive, computed from the 95% CIs); `report` writes claims.md and the plots.
"""
