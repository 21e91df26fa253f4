"""Dataset readers (A2D/J-HMDB/Ref-YouTube-VOS/DAVIS) and the built-in Moving Shapes Sentences benchmark."""
