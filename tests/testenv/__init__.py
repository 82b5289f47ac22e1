"""The real test environment: control plane, MinIO and a test node agent (test harness code).

No mocks: etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubectl and MinIO are
the real programs, built from Go modules by ``hack/install-testenv.sh`` (versions pinned in
``hack/testenv.env``). Pods run as local processes through ``testenv.nodeagent``.

Modules:
  binaries      find the built binaries; a missing one raises MissingBinaryError with the build command
  processes     process groups, log files, free ports, polling with deadlines
  pki           throw-away CA and certificates (openssl CLI)
  controlplane  etcd + apiserver + controller-manager + scheduler on 127.0.0.1
  minio         MinIO with per-session credentials and a test bucket
  podnetwork    bridge + per-pod network namespaces (real, non-loopback pod IPs)
  nodeagent     the test kubelet (a Node, its Lease, pods as processes, probes, termination messages)
  crds          apply CRDs and wait for Established
  stack         one shared instance of each per pytest process (integration + e2e)
  devcluster    ``python -m testenv.devcluster``: the same stack in the foreground for development

Run the integration tests with ``hack/install-testenv.sh && .venv/bin/pytest -m integration``.
Set CONVEYOR_TESTENV_KEEP=1 to keep logs, certificates and pod directories after a session.
"""
