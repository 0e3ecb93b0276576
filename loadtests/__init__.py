"""Load tests for the LLM service: the Locust user, SLO files and the gate that judges a run.

Pure modules (`slo`, `metrics`, `gate`, `workload`, `plots`) import no Locust, so the
pipeline can evaluate and plot a run without loading Locust's gevent patches.
"""
