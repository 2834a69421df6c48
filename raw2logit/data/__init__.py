"""Raw datasets: the published Raw-Microscopy and Raw-Drone, the embedded sensor simulator, DNG folders."""
