# Bumped by the release process; reported by status() and, later, BootNotification.
VERSION = "0.1.0"
