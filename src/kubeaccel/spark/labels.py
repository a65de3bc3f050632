"""The labels Spark puts on its pods (the driver's and, from the driver, the executors'): how `status`,
`list`, `kill` and the quota pre-flight find an app's pods without loading the pod builder."""

LABEL_APP_ID = "spark-app-selector"
LABEL_ROLE = "spark-role"
LABEL_APP_NAME = "spark-app-name"
