"""crowdgate's foundation: the Label Studio adapter and the other shared pieces; imports nothing else of crowdgate."""
