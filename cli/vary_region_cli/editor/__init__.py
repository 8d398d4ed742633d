"""`vary-region editor`: paint a mask on the real parent image in the browser, then submit or save the job."""
