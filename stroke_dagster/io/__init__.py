"""Files in and out: arrivals in ``incoming/``, patient-file readers, validation and versioned
files."""
