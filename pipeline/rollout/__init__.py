"""Progressive delivery with Argo Rollouts (docs/rollout.md): the canary analysis as the chart's values define
it (`analysis`: metrics, `{{args.NAME}}` substitution, conditions and their verdicts, as Argo Rollouts does),
the model-serving pod budget of a canary (`pod_budget`) and the canary drill's targets (`targets`). The render
checks, the canary drill and ci's canary stage import these; nothing here runs a process or talks to a cluster.
"""
