"""The conversion commands: `pt2flax` (a Hugging Face PyTorch checkpoint in),
`flax2pt` (a Hugging Face folder out) and `make_student` (a student from its
teacher). In a checkout they run as `python convert/pt2flax.py ...`; installed,
this folder is the package `jaxqa.convert`, and the commands are
`jaxqa-pt2flax`, `jaxqa-flax2pt` and `jaxqa-student`."""
