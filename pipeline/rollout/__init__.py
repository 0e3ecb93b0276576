"""Progressive delivery with Argo Rollouts (docs/rollout.md): the canary analysis as the chart's values define
it (`analysis`: metrics, `{{args.NAME}}` substitution, conditions and their verdicts, as Argo Rollouts does)
and the model-serving pod budget of a canary (`pod_budget`). The render checks and the canary drill import
these; nothing here runs a process or talks to a cluster.
"""
