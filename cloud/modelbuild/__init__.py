"""Intent bundle build: fine-tune MiniLM, export with optimum, fold the head, quantize, calibrate."""
