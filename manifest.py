# Freezes the firmware package into a board build. Board manifests under
# boards/<board>/manifest.py include this file and add their own modules.
package("firmware", base_path=".")
