"""Every figure the harness draws, with matplotlib and no display: `style` (shared by all),
`training` (logged with each run), `study` (a study's parent run, from Optuna), `report`."""
