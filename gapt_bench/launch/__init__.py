"""From a request to records: plug-ins (`plugins`), the validated plan (`plan`), one run (`execute`), a local
worker pool (`local`), cluster jobs through submitit (`options`, `cluster`, `queue`, `status`) and the machine a run ran on
(`environment`).
"""
