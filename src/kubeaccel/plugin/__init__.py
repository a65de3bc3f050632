"""Node side: the kubelet Device Plugin API v1beta1 server, registration, daemon and checker."""
