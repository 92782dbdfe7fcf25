# The simulated plant: what stands in for the power electronics and the EV on
# the Unix port, and on a bare dev board in bench demo mode. It is product
# code, below the charger logic: nothing here imports firmware.evse.
