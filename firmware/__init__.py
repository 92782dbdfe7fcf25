# The charger firmware package. Board code under boards/ builds a Station from it.
