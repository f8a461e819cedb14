"""The seven measures of a reading, in wattflow's order (`Measure::ALL` in src/model.rs), as every
peer script names them."""

MEASURES = [
    "global_active_power",
    "global_reactive_power",
    "voltage",
    "global_intensity",
    "sub_metering_1",
    "sub_metering_2",
    "sub_metering_3",
]
