"""Cloud generation workers: backends behind one Protocol, served over a NATS queue group."""
