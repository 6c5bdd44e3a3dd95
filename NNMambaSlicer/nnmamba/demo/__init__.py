"""Demo material: seeded synthetic phantoms (CT abdomen, fetal brain MRI, brain MRI with or without atrophy) that the
bundled demo models are trained and tested on, so that every task can be tried without patient data."""
