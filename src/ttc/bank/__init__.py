"""Sample banks: record K samples per problem once (`ttc record`), replay strategies on them (`ttc tune`)."""
