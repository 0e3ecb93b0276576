"""The rollback controller: Alertmanager webhook (v4) in, `git revert` of the bad promotion out.

`app` serves it (create_app), `config` its settings, `webhook` the payload, `auth` the header check,
`decisions` what to roll back and the revert itself, `audit` the audit trail, `metrics` its /metrics.
The rollback drill that exercises it end to end is `rollback_drill` with its `drill_*` helpers.
"""
