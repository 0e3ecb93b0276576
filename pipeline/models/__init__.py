"""The model as a release artifact: its record, the stand-in the repo trains, the OCI artifact, the eval gate."""
