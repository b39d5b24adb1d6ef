"""Cluster start-up: a local multi-node Ray cluster on one machine (``local_cluster.py``) and the
Ray cluster launcher config for VMs (``ray-cluster.yaml``)."""
