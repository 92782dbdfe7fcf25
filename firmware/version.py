# Bumped by the release process; reported by status(), BootNotification
# (firmwareVersion) and the update bundles' version checks.
VERSION = "0.1.0"
